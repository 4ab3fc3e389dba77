//! Shared helpers for the integration tests: event builders and row readers.
#![allow(dead_code)]

pub mod digest;
pub mod events;
pub mod ingest;
pub mod rows;
