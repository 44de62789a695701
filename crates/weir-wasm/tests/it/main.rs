//! weir-wasm's integration tests: the host through its public API against real
//! components built from the repository's guests.

mod polyglot;
