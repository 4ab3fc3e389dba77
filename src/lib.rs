//! lookout-ingester: keeps Armada's Lookout PostgreSQL database current from the Pulsar job-set event stream.
//!
//! Data flows one way through stages, each a module with one job:
//!
//! `source` (Pulsar) → `decode` → `batch` → `convert` (events → row changes) → `writer` (one transaction per
//! batch, through `store`, which only runs SQL) → ack (back in `source`). A module imports only earlier stages and
//! the shared data modules (`message`, `changes`, `states`, `proto`, `config`) and the leaf `metrics`.
//!
//! `pipeline` wires the stages together for `run`; `apply` drives decode → convert → writer over a file; `replay`
//! feeds the pipeline from Pulsar readers (and moves the live subscription back, `rewind`). See
//! `docs/architecture.md` for where each concern lives.
//! `loadgen` generates and publishes Armada event streams; `bench` measures the service (and Armada's) on them.

pub mod analytics;
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
pub mod replay;
pub mod source;
pub mod startup;
pub mod states;
pub mod store;
pub mod telemetry;
pub mod writer;
