//! Feeds arbitrary bytes to every decoder of weir-log-embedded's on-disk data; none may panic,
//! loop forever or allocate without bound, and any frame the decoders accept must be what
//! the encoder writes for the records they decoded from it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weir_log_embedded::fuzz_decode(data);
});
