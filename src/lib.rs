//! lookout-ingester: keeps Armada's Lookout PostgreSQL database current from the Pulsar job-set event stream.
//!
//! Data flows one way through stages, each a module with one job:
//!
//! `source` (Pulsar) → `decode` → `batch` → `convert` (events → row changes) → `store` (Postgres, one
//! transaction per batch) → ack (back in `source`).
//!
//! `pipeline` wires the stages together for `run`; `apply` drives decode → convert → store over a file.
//! `loadgen` generates and publishes Armada event streams; `bench` measures the service (and Armada's) on them.

pub mod apply;
pub mod batch;
pub mod bench;
pub mod changes;
pub mod config;
pub mod convert;
pub mod db;
pub mod decode;
pub mod http;
pub mod loadgen;
pub mod message;
pub mod metrics;
pub mod migrate;
pub mod pipeline;
pub mod proto;
pub mod source;
pub mod startup;
pub mod store;
pub mod telemetry;
