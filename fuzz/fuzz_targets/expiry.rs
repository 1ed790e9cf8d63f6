//! Durations, grace periods, expiry requests and the lifetime policy.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_fuzz::expiry::check(data));
