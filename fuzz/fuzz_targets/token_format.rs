//! The token format: `validate` and `TokenSecret::parse_str` against an independent model.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyward_fuzz::token::check(data));
