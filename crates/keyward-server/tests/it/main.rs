//! keyward-server's integration tests: one binary (linking is the slow part on small machines),
//! one module per area. Most drive a real server on an ephemeral port over HTTP; `hot_path`
//! drives the service directly over a store that counts and stalls its reads.
//!
//! The modules are `cfg(test)` so that clippy treats all of them, helpers included, as test code
//! (where `clippy.toml` allows unwrapping).

#[cfg(test)]
mod at_rest;
#[cfg(test)]
mod authorization;
#[cfg(test)]
mod bad_input;
#[cfg(test)]
mod client_addr;
#[cfg(test)]
mod connections;
#[cfg(test)]
mod forward_auth;
#[cfg(test)]
mod hardening;
#[cfg(test)]
mod helpers;
#[cfg(test)]
mod hot_path;
#[cfg(test)]
mod isolation;
#[cfg(test)]
mod leaks;
#[cfg(test)]
mod lifecycle;
#[cfg(test)]
mod limits;
#[cfg(test)]
mod notices;
#[cfg(test)]
mod oauth;
#[cfg(test)]
mod openapi;
#[cfg(test)]
mod ops;
#[cfg(test)]
mod usage;
#[cfg(test)]
mod users;
#[cfg(test)]
mod verify_props;
#[cfg(test)]
mod web;
#[cfg(test)]
mod wire;
