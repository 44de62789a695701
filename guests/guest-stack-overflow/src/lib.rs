//! Test guest: recurses without end on every event; the wasm stack limit must stop it.

use weir_guest::{Error, Event, Function, Output};

struct StackOverflow;

/// Scalars only, so every frame is on the wasm stack (not Rust's shadow stack in linear
/// memory) and the engine's stack limit is what ends it.
#[inline(never)]
#[allow(unconditional_recursion)]
fn deeper(n: u64) -> u64 {
    std::hint::black_box(deeper(std::hint::black_box(n + 1))) + 1
}

impl Function for StackOverflow {
    fn handle(event: Event) -> Result<Vec<Output>, Error> {
        let depth = deeper(0);
        let mut out = event;
        out.subject = Some(depth.to_string());
        Ok(vec![Output::to("out", out)])
    }
}

weir_guest::export_function!(StackOverflow);
