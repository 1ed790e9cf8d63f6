//! The properties keyward's fuzz targets check, one module per kind of untrusted input.
//!
//! Each `check` takes the fuzzer's bytes and panics (through `assert!`) when a property fails,
//! which libFuzzer reports as a crash and saves as an artifact. The targets in `fuzz_targets/`
//! are one-line wrappers, so a failing input can also be replayed from a plain test.
//!
//! Where a property has an independent model (the token checksum, the duration grammar, the
//! sample catalog), the model is written out here rather than calling back into the code under
//! test: a fuzzer that compares the code with itself finds only crashes.

pub mod expiry;
pub mod http;
pub mod path;
pub mod scope;
pub mod token;
