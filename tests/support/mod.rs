//! The integration tests' one support module. Use it with `mod support;` in a test file.
//!
//! - `db`: a fresh PostgreSQL database per test (`TestDb`);
//! - `app`: the service on a fresh database and topic (`spawn_app`);
//! - `events`: event builders; `stream`: a realistic many-job stream; `ingest`: the `apply` path;
//! - `rows`: row readers; `snapshot`: every table the ingester writes, compared exactly;
//! - `http`: a tiny HTTP client, Prometheus text, polling (`eventually`, `poll_until`);
//! - `broker`: Pulsar topics, stats, producers;
//! - `child`: the real binary as a child process; `private`: a private Postgres + Pulsar pair; `faults`: what the
//!   fault tests share; `defects`: what the defect tests share; `protoc`: protoc plumbing for the wire tests.
#![allow(dead_code)]

pub mod app;
pub mod broker;
pub mod child;
pub mod db;
pub mod defects;
pub mod digest;
pub mod events;
pub mod faults;
pub mod http;
pub mod ingest;
pub mod migrations;
pub mod private;
pub mod protoc;
pub mod rows;
pub mod service;
pub mod snapshot;
pub mod spec_check;
pub mod stream;
