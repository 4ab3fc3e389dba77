//! Generates the Rust types for the protobuf subset under `proto/` (see `src/proto.rs` for the layout).
//!
//! Uses the system `protoc`: `$PROTOC` if set, else `protoc` on `PATH` (protoc >= 3.15, for proto3
//! `optional`). `google/protobuf/timestamp.proto` comes from protoc's own include directory (or
//! `$PROTOC_INCLUDE`) and is mapped to `prost_types::Timestamp`.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const PROTO_ROOT: &str = "proto";

const PROTOS: &[&str] = &[
    "proto/armadaevents/events.proto",
    "proto/api/submit.proto",
    "proto/k8s.io/api/core/v1/generated.proto",
    "proto/k8s.io/api/networking/v1/generated.proto",
    "proto/k8s.io/apimachinery/pkg/api/resource/generated.proto",
    "proto/k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto",
];

fn main() {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    println!("cargo:rerun-if-env-changed=PROTOC");
    println!("cargo:rerun-if-env-changed=PROTOC_INCLUDE");

    let protoc = env::var_os("PROTOC").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("protoc"));
    match Command::new(&protoc).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "lookout-ingester build: `{} --version` failed ({}): {}",
            protoc.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(err) => panic!(
            "lookout-ingester build: cannot run protoc `{}`: {err}. Install protoc >= 3.15 \
             (Debian/Ubuntu: `apt-get install protobuf-compiler libprotobuf-dev`) or set PROTOC to its path.",
            protoc.display()
        ),
    }

    let mut config = prost_build::Config::new();
    config.protoc_executable(&protoc);
    // All `bytes` fields (which include every string of Armada's schema, see proto/armadaevents/events.proto)
    // become `bytes::Bytes`: decoding from a `Bytes` payload then slices it instead of copying, and raw
    // sub-messages (pod specs) are copied into api.Job by reference count.
    config.bytes(["."]);
    // The largest event kinds are boxed, so that an event is not as large as a submit whatever its kind (inline,
    // every one of the ~10^5 events a busy pipeline holds cost 600 bytes; boxed, 192).
    for kind in ["submitJob", "jobRunLeased", "resourceUtilisation", "standaloneIngressInfo"] {
        config.boxed(format!(".armadaevents.EventSequence.Event.event.{kind}"));
    }

    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .compile_with_config(config, PROTOS, &[PROTO_ROOT])
        .unwrap_or_else(|err| panic!("lookout-ingester build: compiling {PROTO_ROOT}/ failed: {err}"));
}
