//! lookout-ingester: keeps Armada's Lookout PostgreSQL database current from the Pulsar job-set event stream.
//!
//! Data flows one way through stages, each a module with one job:
//!
//! `source` (Pulsar) → `decode` → `batch` → `convert` (events → row changes) → `store` (Postgres, one
//! transaction per batch) → ack (back in `source`).
//!
//! `pipeline` wires the stages together for `run`; `apply` drives decode → convert → store over a file.

pub mod analytics;
pub mod apply;
pub mod batch;
pub mod changes;
pub mod config;
pub mod convert;
pub mod db;
pub mod decode;
pub mod http;
pub mod message;
pub mod metrics;
pub mod migrate;
pub mod pipeline;
pub mod proto;
pub mod source;
pub mod startup;
pub mod store;
pub mod telemetry;
