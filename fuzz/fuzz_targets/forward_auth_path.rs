//! The forward-auth path normalizer and route table.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_fuzz::path::check(data));
