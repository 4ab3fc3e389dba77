//! Shared helpers for the integration tests: event builders and row readers.
#![allow(dead_code)]

pub mod events;
pub mod ingest;
pub mod rows;
pub mod spec_check;
