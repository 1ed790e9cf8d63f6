//! The whole HTTP application in process, over a real SQLite store.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_fuzz::http::check(data));
