//! keyward's black-box tests: the real `keyward` binary, started as a child process on a temp
//! data dir, driven over HTTP on 127.0.0.1 and through its command line. One test binary, one
//! module per area (linking is the slow part on small machines).
//!
//! The modules are `cfg(test)` so that clippy treats all of them, helpers included, as test code
//! (where `clippy.toml` allows unwrapping).

#[cfg(test)]
mod backup;
#[cfg(test)]
mod bad_input;
#[cfg(test)]
mod browser;
#[cfg(test)]
mod check;
#[cfg(test)]
mod config;
#[cfg(test)]
mod durability;
#[cfg(test)]
mod events;
#[cfg(test)]
mod hardening;
#[cfg(test)]
mod helpers;
#[cfg(test)]
mod key_guard;
#[cfg(test)]
mod key_rotation;
#[cfg(test)]
mod library;
#[cfg(test)]
mod live_cli;
#[cfg(test)]
mod no_plaintext;
#[cfg(test)]
mod notices;
#[cfg(test)]
mod postgres;
#[cfg(test)]
#[path = "../../examples/protected_api.rs"]
#[expect(
    dead_code,
    reason = "the example's `main` is not run here; its router is"
)]
mod protected_api;
#[cfg(test)]
mod proxies;
#[cfg(test)]
mod quickstart;
#[cfg(test)]
mod sso;
#[cfg(test)]
mod tls;
#[cfg(test)]
mod token_cli;
#[cfg(test)]
mod upgrade;
#[cfg(test)]
mod users_cli;
