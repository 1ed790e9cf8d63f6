//! keyward's server: the verification service and its cache, the JSON API, metrics.
//!
//! - [`service`]: the use cases, shared with the command line; no HTTP in it;
//! - [`http`]: the axum application, thin handlers over the service, one error mapping;
//! - [`telemetry`]: the Prometheus recorder;
//! - [`web`]: the web page (sign-in, tokens, admin), server-rendered.

pub mod email;
pub mod http;
pub mod service;
pub mod telemetry;
pub mod web;
pub mod webhooks;

pub use service::{Caller, Keyward, ServiceError, Settings, Verdict, VerifiedToken};
