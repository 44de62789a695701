//! `SizeClasses` against what an allocator owes its caller: blocks as large and as
//! aligned as asked, never overlapping one in use, a reallocated block keeping its bytes,
//! freed small blocks served again, and a refusal of the backing allocator passed on.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use weir_guest_alloc::{CHUNK, GRANULE, MAX_SMALL, SizeClasses};

/// A live block and the byte it was filled with.
struct Live {
    ptr: *mut u8,
    layout: Layout,
    fill: u8,
}

fn check(live: &Live) {
    assert_eq!(
        live.ptr as usize % live.layout.align(),
        0,
        "misaligned block"
    );
    // SAFETY: the block is live and `layout.size()` bytes long.
    let bytes = unsafe { std::slice::from_raw_parts(live.ptr, live.layout.size()) };
    assert!(
        bytes.iter().all(|b| *b == live.fill),
        "a block of {} bytes lost its contents",
        live.layout.size()
    );
}

fn fill(live: &Live) {
    // SAFETY: the block is live and `layout.size()` bytes long.
    unsafe { live.ptr.write_bytes(live.fill, live.layout.size()) };
}

fn random_layout(rng: &mut fastrand::Rng) -> Layout {
    // Mostly small blocks, some around the class boundary, some large.
    let size = match rng.u8(0..10) {
        0..=6 => rng.usize(1..=256),
        7 | 8 => rng.usize(MAX_SMALL - 40..=MAX_SMALL + 40),
        _ => rng.usize(1..=3 * CHUNK),
    };
    let align = 1 << rng.u32(0..=6); // 1 to 64: some beyond GRANULE
    Layout::from_size_align(size, align).expect("a valid layout")
}

#[test]
fn random_allocations_frees_and_reallocations_keep_every_block_whole() {
    for seed in 0..20 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let alloc = SizeClasses::new(System);
        let mut live: Vec<Live> = Vec::new();
        for step in 0..4_000u32 {
            match rng.u8(0..10) {
                // Allocate (plain or zeroed).
                0..=4 => {
                    let layout = random_layout(&mut rng);
                    let zeroed = rng.bool();
                    // SAFETY: the layout has a non-zero size.
                    let ptr = unsafe {
                        if zeroed {
                            alloc.alloc_zeroed(layout)
                        } else {
                            alloc.alloc(layout)
                        }
                    };
                    assert!(!ptr.is_null(), "seed {seed} step {step}: allocation failed");
                    let block = Live {
                        ptr,
                        layout,
                        fill: (step % 251) as u8 + 1,
                    };
                    if zeroed {
                        check(&Live { fill: 0, ..block });
                    }
                    fill(&block);
                    live.push(block);
                }
                // Free one.
                5..=7 if !live.is_empty() => {
                    let block = live.swap_remove(rng.usize(0..live.len()));
                    check(&block);
                    // SAFETY: allocated by `alloc` with this layout, and not used again.
                    unsafe { alloc.dealloc(block.ptr, block.layout) };
                }
                // Reallocate one: its old bytes (up to the new size) stay.
                8 | 9 if !live.is_empty() => {
                    let i = rng.usize(0..live.len());
                    let new_size = random_layout(&mut rng).size();
                    let old = &live[i];
                    check(old);
                    // SAFETY: allocated by `alloc` with this layout; the new size is
                    // non-zero and far from overflowing.
                    let ptr = unsafe { alloc.realloc(old.ptr, old.layout, new_size) };
                    assert!(
                        !ptr.is_null(),
                        "seed {seed} step {step}: reallocation failed"
                    );
                    let layout = Layout::from_size_align(new_size, old.layout.align()).unwrap();
                    let kept = Live {
                        ptr,
                        layout: Layout::from_size_align(new_size.min(old.layout.size()), 1)
                            .unwrap(),
                        fill: old.fill,
                    };
                    check(&kept);
                    live[i] = Live {
                        ptr,
                        layout,
                        fill: old.fill,
                    };
                    fill(&live[i]);
                }
                _ => {}
            }
            // Every live block is still whole: none was handed out twice or overlaps
            // another (a write to one would have changed the other's bytes).
            if step % 97 == 0 {
                live.iter().for_each(check);
            }
        }
        live.iter().for_each(check);
        for block in live {
            // SAFETY: allocated by `alloc` with this layout.
            unsafe { alloc.dealloc(block.ptr, block.layout) };
        }
    }
}

#[test]
fn a_freed_small_block_is_served_again_and_a_large_one_goes_back_to_the_system() {
    let alloc = SizeClasses::new(Counting::default());
    let small = Layout::from_size_align(100, 8).unwrap();
    // SAFETY: non-zero sizes; each block is freed with the layout it was made with.
    unsafe {
        let a = alloc.alloc(small);
        let chunks = alloc_count(&alloc);
        assert_eq!(chunks, 1, "the first small block takes one chunk");
        alloc.dealloc(a, small);
        // Any size of the same class (97 to 112 bytes) gets the same block back.
        let b = alloc.alloc(Layout::from_size_align(112, 16).unwrap());
        assert_eq!(a, b, "a freed block of the class is served first");
        // Blocks of a class fill the chunk before another is taken.
        let per_chunk = CHUNK / 112usize.next_multiple_of(GRANULE);
        let more: Vec<_> = (1..per_chunk).map(|_| alloc.alloc(small)).collect();
        assert_eq!(
            alloc_count(&alloc),
            1,
            "one chunk holds {per_chunk} blocks of 112 bytes"
        );
        let next = alloc.alloc(small);
        assert_eq!(alloc_count(&alloc), 2, "the next block takes a new chunk");
        // Large blocks are the system's: taken and given back one by one.
        let large = Layout::from_size_align(MAX_SMALL + 1, 8).unwrap();
        let l = alloc.alloc(large);
        assert_eq!(alloc_count(&alloc), 3);
        alloc.dealloc(l, large);
        assert_eq!(
            backing_frees(&alloc),
            1,
            "a large block goes back to the system"
        );
        for p in more.into_iter().chain([b, next]) {
            alloc.dealloc(p, small);
        }
        assert_eq!(backing_frees(&alloc), 1, "small blocks stay on their lists");
    }
}

#[test]
fn when_the_system_refuses_a_chunk_the_allocation_fails_and_later_ones_can_succeed() {
    let alloc = SizeClasses::new(Counting {
        refuse: Cell::new(true),
        ..Counting::default()
    });
    let small = Layout::from_size_align(24, 8).unwrap();
    // SAFETY: non-zero sizes; the block is freed with the layout it was made with.
    unsafe {
        assert!(alloc.alloc(small).is_null(), "no chunk: no block");
        assert!(
            alloc
                .alloc(Layout::from_size_align(4 * CHUNK, 8).unwrap())
                .is_null()
        );
        alloc.backing().refuse.set(false);
        let p = alloc.alloc(small);
        assert!(
            !p.is_null(),
            "the system gives again: so does the allocator"
        );
        alloc.dealloc(p, small);
    }
}

#[test]
fn what_is_left_of_a_chunk_is_served_even_while_the_system_refuses() {
    let alloc = SizeClasses::new(Counting::default());
    let block = |size| Layout::from_size_align(size, 8).unwrap();
    // SAFETY: non-zero sizes; each block is freed with the layout it was made with.
    unsafe {
        // 3 x 1,008 + 1,024 bytes of the first 4 KiB chunk: 48 are left.
        let first: Vec<_> = (0..3).map(|_| alloc.alloc(block(1008))).collect();
        let fourth = alloc.alloc(block(1024));
        assert_eq!(alloc_count(&alloc), 1);
        assert_eq!(fourth as usize - first[0] as usize, 3 * 1008);
        // The next 1,024 bytes need a chunk, which the system refuses: the 48 bytes left
        // go to their class's list first, and the allocation fails.
        alloc.backing().refuse.set(true);
        assert!(alloc.alloc(block(1024)).is_null());
        let rest = alloc.alloc(block(48));
        assert_eq!(
            rest as usize,
            fourth as usize + 1024,
            "the chunk's last 48 bytes"
        );
        assert!(alloc.alloc(block(48)).is_null(), "served once");
        alloc.backing().refuse.set(false);
        let next = alloc.alloc(block(1024));
        assert!(!next.is_null());
        assert_eq!(
            alloc_count(&alloc),
            2,
            "a new chunk once the system gives again"
        );
        for (p, size) in
            first
                .into_iter()
                .map(|p| (p, 1008))
                .chain([(fourth, 1024), (rest, 48), (next, 1024)])
        {
            alloc.dealloc(p, block(size));
        }
    }
}

/// The system allocator, counting what is taken from and given back to it, and refusing
/// everything while `refuse` is set.
#[derive(Default)]
struct Counting {
    allocs: Cell<usize>,
    frees: Cell<usize>,
    refuse: Cell<bool>,
}

// SAFETY: System's blocks, passed through; a refusal is a null pointer, as allowed.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if self.refuse.get() {
            return std::ptr::null_mut();
        }
        self.allocs.set(self.allocs.get() + 1);
        // SAFETY: as our caller was asked.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.frees.set(self.frees.get() + 1);
        // SAFETY: as our caller was asked.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn alloc_count(alloc: &SizeClasses<Counting>) -> usize {
    alloc.backing().allocs.get()
}

fn backing_frees(alloc: &SizeClasses<Counting>) -> usize {
    alloc.backing().frees.get()
}
