//! Derives a frame's records, tag, commit and damage from arbitrary bytes, encodes the
//! frame with weir-log-embedded's encoder and checks that its decoders give back exactly
//! what was encoded and refuse every damaged copy; any mismatch panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weir_log_embedded::fuzz_roundtrip(data);
});
