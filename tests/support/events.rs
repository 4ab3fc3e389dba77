//! Builders for Armada event sequences (used by the golden, property and Pulsar tests): the library's load-generator
//! vocabulary, `lookout_ingester::loadgen::events`, so tests, `loadgen` and the benchmarks build events one way.

pub use lookout_ingester::loadgen::events::*;

/// When the tests' event streams start (Unix seconds).
pub const T0: i64 = 1_700_000_000;
