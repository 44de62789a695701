//! The allocator weir's Rust SDKs give a function (`weir-guest`, `weir-guest-entity`,
//! `weir-guest-projection`, each through its default feature `allocator`).
//!
//! A call of a typical function makes many small allocations and frees them before it
//! returns: the event's strings lowered into the guest, the parsed JSON, the output's
//! buffer. The allocator a wasm guest gets by default (wasi-libc's dlmalloc) spent about
//! 13% of a warm call of the example transform on them; `talc` as much. [`SizeClasses`]
//! serves every block of up to [`MAX_SMALL`] bytes (alignment up to [`GRANULE`]) from a
//! free list per size class, in steps of [`GRANULE`] bytes: an allocation pops a list, a
//! free pushes one, neither searches nor merges. The lists are refilled from the system
//! allocator a [`CHUNK`] at a time; larger or more aligned blocks go to the system
//! allocator as before.
//!
//! What it costs: a freed small block stays on its class's list for that class, never
//! merged with its neighbours or given back, so an instance's memory is the largest it
//! held per class. An instance is recycled after `instance_reuse` calls, and its memory
//! limit still applies (when the system allocator refuses a chunk, the allocation fails
//! as it would have). The allocator runs inside the function's sandbox: whatever it
//! does, it can only touch the function's own linear memory.
//!
//! One hazard comes with any Rust global allocator on wasm32-wasip2: the host lowers
//! lists and strings through std's `cabi_realloc` (this allocator), and wasi-libc frees
//! some it receives (the environment, directory entries, stdin reads, `getentropy`'s
//! bytes) with libc's `free`. weir gives guests none of the former; a function whose C
//! code calls libc's `getentropy` or `arc4random` must build without this allocator.
//!
//! It is the global allocator of a wasm guest without threads (feature `global`); on
//! other targets nothing is registered, and [`SizeClasses`] is an ordinary value (so the
//! tests run natively).

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr;

/// The step between size classes, and the largest alignment a small block gets.
pub const GRANULE: usize = 16;
/// Size classes: blocks of 16, 32, …, 1,024 bytes.
const CLASSES: usize = 64;
/// The largest block served from the free lists; larger ones go to the system allocator.
pub const MAX_SMALL: usize = GRANULE * CLASSES;
/// How much is taken from the system allocator when a class's list is empty and the
/// current chunk has too little left. Small, so a fresh instance grows its memory no
/// sooner than with the system allocator alone (64 KiB chunks made a fresh instance of
/// the example transform 25% slower to run).
pub const CHUNK: usize = 4096;

/// Free lists by size class in front of `A`. Not thread-safe: a wasm guest without
/// threads has one thread, and the tests use it from one.
pub struct SizeClasses<A: GlobalAlloc> {
    backing: A,
    state: UnsafeCell<State>,
}

struct State {
    /// The first free block of each class; each free block's first word points to the
    /// next one (null ends the list).
    free: [*mut u8; CLASSES],
    /// What is left of the current chunk: `next..end`, both multiples of `GRANULE`.
    next: *mut u8,
    end: *mut u8,
}

/// The class of a block `layout` describes, if it is small.
fn class_of(layout: Layout) -> Option<usize> {
    (layout.size() <= MAX_SMALL && layout.align() <= GRANULE)
        .then(|| layout.size().saturating_sub(1) / GRANULE)
}

/// The size of a class's blocks.
fn class_size(class: usize) -> usize {
    (class + 1) * GRANULE
}

impl<A: GlobalAlloc> SizeClasses<A> {
    /// Empty lists in front of `backing`.
    pub const fn new(backing: A) -> Self {
        SizeClasses {
            backing,
            state: UnsafeCell::new(State {
                free: [ptr::null_mut(); CLASSES],
                next: ptr::null_mut(),
                end: ptr::null_mut(),
            }),
        }
    }

    /// The allocator behind the free lists.
    pub fn backing(&self) -> &A {
        &self.backing
    }

    /// A block of `class`: the head of its list, else carved from the current chunk,
    /// else from a new one. Null if the backing allocator has no chunk to give.
    ///
    /// # Safety
    /// No other call on `self` may run at the same time.
    unsafe fn alloc_small(&self, class: usize) -> *mut u8 {
        // SAFETY: calls on `self` do not overlap (the caller's promise), so this is the
        // only reference to the state.
        let state = unsafe { &mut *self.state.get() };
        let head = state.free[class];
        if !head.is_null() {
            // SAFETY: `head` is a free block of this class, at least GRANULE bytes and
            // GRANULE-aligned, whose first word was written by `push`.
            state.free[class] = unsafe { head.cast::<*mut u8>().read() };
            return head;
        }
        let size = class_size(class);
        if (state.end as usize) - (state.next as usize) < size {
            // SAFETY: as above; `state` is not used again until this returns.
            if !unsafe { self.refill(state) } {
                return ptr::null_mut();
            }
        }
        let block = state.next;
        // SAFETY: `size` bytes from `next` lie within the current chunk (checked above).
        state.next = unsafe { block.add(size) };
        block
    }

    /// Give what is left of the current chunk to the list of the largest class it
    /// holds, and take a new chunk. False if the backing allocator refuses.
    ///
    /// # Safety
    /// `state` is this allocator's state, borrowed by nobody else.
    unsafe fn refill(&self, state: &mut State) -> bool {
        let left = (state.end as usize) - (state.next as usize);
        if left >= GRANULE {
            // (Less than MAX_SMALL is left when a refill is due; `min` keeps it so.)
            let (rest, class) = (state.next, (left / GRANULE - 1).min(CLASSES - 1));
            // SAFETY: `next..end` is an unused, GRANULE-aligned part of a chunk, of
            // `left` bytes, a multiple of GRANULE: at least a block of `class`.
            unsafe { push(state, rest, class) };
        }
        // SAFETY: the layout has a non-zero size.
        let chunk = unsafe {
            self.backing
                .alloc(Layout::from_size_align_unchecked(CHUNK, GRANULE))
        };
        if chunk.is_null() {
            state.next = ptr::null_mut();
            state.end = ptr::null_mut();
            return false;
        }
        state.next = chunk;
        // SAFETY: the chunk is CHUNK bytes long.
        state.end = unsafe { chunk.add(CHUNK) };
        true
    }
}

/// Put `block` at the head of `class`'s list.
///
/// # Safety
/// `block` is an unused, GRANULE-aligned block of at least `class_size(class)` bytes.
unsafe fn push(state: &mut State, block: *mut u8, class: usize) {
    // SAFETY: the block is at least GRANULE bytes, aligned for a pointer, and unused.
    unsafe { block.cast::<*mut u8>().write(state.free[class]) };
    state.free[class] = block;
}

// SAFETY: small blocks are GRANULE-aligned (chunks are, and every class's size is a
// multiple of GRANULE) and at least as large as asked; a block is on at most one list and
// handed out once until it is freed; the rest is the backing allocator's. The caller of
// each method is held to what `GlobalAlloc` asks, and calls on one `SizeClasses` do not
// overlap (see the type's doc, and `Global` below).
unsafe impl<A: GlobalAlloc> GlobalAlloc for SizeClasses<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            // SAFETY: calls do not overlap (see above).
            Some(class) => unsafe { self.alloc_small(class) },
            // SAFETY: `layout` is as `GlobalAlloc::alloc` was given it.
            None => unsafe { self.backing.alloc(layout) },
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            Some(class) => {
                // SAFETY: calls do not overlap (see above).
                let block = unsafe { self.alloc_small(class) };
                if !block.is_null() {
                    // SAFETY: the block has at least `layout.size()` bytes.
                    unsafe { block.write_bytes(0, layout.size()) };
                }
                block
            }
            // SAFETY: `layout` is as `GlobalAlloc::alloc_zeroed` was given it.
            None => unsafe { self.backing.alloc_zeroed(layout) },
        }
    }

    #[inline]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        match class_of(layout) {
            // SAFETY: `block` came from `alloc_small(class)` (same layout, so the same
            // class) and is no longer used; calls do not overlap.
            Some(class) => unsafe { push(&mut *self.state.get(), block, class) },
            // SAFETY: `block` came from the backing allocator with this layout.
            None => unsafe { self.backing.dealloc(block, layout) },
        }
    }

    #[inline]
    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `GlobalAlloc::realloc` requires `new_size`, rounded up to the
        // alignment, not to overflow `isize`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class_of(layout), class_of(new_layout)) {
            // The block already has room for the new size.
            (Some(old), Some(new)) if old == new => block,
            // SAFETY: `block` came from the backing allocator with `layout`, and the new
            // size stays out of the free lists.
            (None, None) => unsafe { self.backing.realloc(block, layout, new_size) },
            _ => {
                // SAFETY: `new_layout` has a non-zero size, as `realloc` requires.
                let moved = unsafe { self.alloc(new_layout) };
                if !moved.is_null() {
                    // SAFETY: both blocks hold at least the smaller size, and a block
                    // handed out is never one in use.
                    unsafe {
                        ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                }
                moved
            }
        }
    }
}

/// The guest's global allocator, on wasm without threads only.
#[cfg(all(
    feature = "global",
    target_family = "wasm",
    not(target_feature = "atomics")
))]
mod global {
    use core::alloc::{GlobalAlloc, Layout};
    use std::alloc::System;

    use super::SizeClasses;

    /// The guest's global allocator: [`SizeClasses`] in front of the system allocator
    /// (wasi-libc's).
    struct Global(SizeClasses<System>);

    // SAFETY: wasm without the atomics feature has one thread, so calls never overlap.
    unsafe impl Sync for Global {}

    // SAFETY: delegates to `SizeClasses`, whose calls do not overlap (one thread).
    unsafe impl GlobalAlloc for Global {
        #[inline]
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: as `GlobalAlloc::alloc` asks of our caller.
            unsafe { self.0.alloc(layout) }
        }
        #[inline]
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: as `GlobalAlloc::alloc_zeroed` asks of our caller.
            unsafe { self.0.alloc_zeroed(layout) }
        }
        #[inline]
        unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
            // SAFETY: as `GlobalAlloc::dealloc` asks of our caller.
            unsafe { self.0.dealloc(block, layout) }
        }
        #[inline]
        unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: as `GlobalAlloc::realloc` asks of our caller.
            unsafe { self.0.realloc(block, layout, new_size) }
        }
    }

    #[global_allocator]
    static GLOBAL: Global = Global(SizeClasses::new(System));
}
