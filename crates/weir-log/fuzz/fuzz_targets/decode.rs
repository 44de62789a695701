//! Feeds arbitrary bytes to every decoder of weir-log's on-disk data; none may panic,
//! loop forever or allocate without bound.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weir_log::fuzz_decode(data);
});
