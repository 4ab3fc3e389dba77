//! Generated protobuf types (placeholder until the proto subset lands).
