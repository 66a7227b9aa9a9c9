//! The whole platform in one process.
//!
//! [`Platform`] builds the same `App`s the separate binaries run — user service, order
//! service, one relay per event store, the projector, the gateway and the predictor — and runs them
//! together, so the all-in-one mode and the split deployment execute identical code.
//! `tillstream up` is this plus demo data ([`demo`]); the end-to-end tests start it on
//! random ports with their own databases and namespace.

pub mod cli;
pub mod demo;
pub mod platform;
pub mod settings;
pub mod tail;

pub use platform::{Platform, PlatformConfig};
