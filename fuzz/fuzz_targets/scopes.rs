//! Scopes, scope sets and the sample catalog.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_fuzz::scope::check(data));
