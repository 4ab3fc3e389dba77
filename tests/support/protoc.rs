//! protoc plumbing and small helpers for the wire-compatibility tests (`tests/proto_wire*.rs`): the bytes under test
//! come from an independent encoder, `protoc --encode` against the reference schema in `tests/fixtures/proto/reference/`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use lookout_ingester::proto::armadaevents::{
    self as ae, EventSequence, kubernetes_main_object, kubernetes_resource_info::Info,
};
use lookout_ingester::proto::k8s::io::api::core::v1 as core_v1;
use lookout_ingester::proto::{Bytes, Utf8Repairs, or_empty, text_map};
use prost::Message;

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures() -> PathBuf {
    manifest_dir().join("tests/fixtures/proto")
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading fixture {}: {e}", path.display()))
}

pub fn protoc_path() -> PathBuf {
    std::env::var_os("PROTOC").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("protoc"))
}

/// Runs protoc with `stdin`, returns stdout; panics with protoc's stderr on failure.
pub fn protoc(args: &[String], stdin: &[u8]) -> Vec<u8> {
    let protoc = protoc_path();
    let mut child = Command::new(&protoc)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "these tests need protoc, but `{}` cannot be run: {e}. Install it (Debian/Ubuntu: apt-get install \
                 protobuf-compiler) or set PROTOC to its path.",
                protoc.display()
            )
        });
    let mut child_stdin = child.stdin.take().expect("protoc stdin");
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || child_stdin.write_all(&input));
    let out = child.wait_with_output().expect("waiting for protoc");
    writer.join().expect("stdin writer thread").expect("writing protoc stdin");
    assert!(out.status.success(), "protoc {args:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Arguments that load the whole reference schema.
pub fn reference_args() -> Vec<String> {
    vec![
        format!("-I{}", fixtures().join("reference").display()),
        "armadaevents/events.proto".into(),
        "api/submit.proto".into(),
    ]
}

/// `protoc --encode=<type>` of a text-format message, against the reference schema.
pub fn protoc_encode(type_name: &str, text_format: &[u8]) -> Vec<u8> {
    let mut args = vec![format!("--encode={type_name}")];
    args.extend(reference_args());
    protoc(&args, text_format)
}

/// `protoc --decode=<type>` of binary bytes, against the reference schema.
pub fn protoc_decode(type_name: &str, binary: &[u8]) -> String {
    let mut args = vec![format!("--decode={type_name}")];
    args.extend(reference_args());
    String::from_utf8(protoc(&args, binary)).expect("protoc prints UTF-8 here")
}

pub fn decode_sequence(binary: Vec<u8>) -> EventSequence {
    EventSequence::decode(Bytes::from(binary)).expect("EventSequence decodes")
}

// ---------------------------------------------------------------------------------------------------------------
// small helpers
// ---------------------------------------------------------------------------------------------------------------

/// Text of a bytes-declared string that must be valid UTF-8 in these fixtures.
pub fn s(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_else(|_| panic!("not UTF-8: {bytes:?}"))
}

/// Text of a proto2 `optional bytes` string (absent → "").
pub fn o(field: &Option<Bytes>) -> &str {
    s(or_empty(field))
}

pub fn strings(list: &[Bytes]) -> Vec<&str> {
    list.iter().map(|b| s(b)).collect()
}

pub fn map(entries: &[impl lookout_ingester::proto::StringEntry]) -> BTreeMap<String, String> {
    let mut repairs = Utf8Repairs::new();
    let m = text_map(entries, &mut repairs);
    assert_eq!(repairs.count(), 0);
    m
}

pub fn btree<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The resources of a ResourceList as `name → quantity text`.
pub fn resources(list: &[core_v1::QuantityMapEntry]) -> BTreeMap<String, String> {
    list.iter().map(|e| (s(e.key_bytes()).to_string(), s(e.quantity_bytes()).to_string())).collect()
}

#[allow(unused_macros)]
macro_rules! arm {
    ($event:expr, $variant:ident) => {
        match &$event.event {
            Some(EventKind::$variant(inner)) => inner,
            other => panic!("expected {}, got {:?}", stringify!($variant), other),
        }
    };
}

#[allow(unused_macros)]
macro_rules! reason {
    ($error:expr, $variant:ident) => {
        match &$error.reason {
            Some(Reason::$variant(inner)) => inner,
            other => panic!("expected reason {}, got {:?}", stringify!($variant), other),
        }
    };
}

pub const JOB: &str = "01hjob00000000000000000001";
pub const RUN: &str = "00000000-0000-0000-0000-000000000001";

pub fn main_pod_spec(submit: &ae::SubmitJob) -> &ae::PodSpecWithAvoidList {
    match submit.main_object.as_ref().and_then(|m| m.object.as_ref()) {
        Some(kubernetes_main_object::Object::PodSpec(p)) => p,
        other => panic!("main object is not a pod spec: {other:?}"),
    }
}

pub fn pod_info(info: &ae::KubernetesResourceInfo) -> &ae::PodInfo {
    match &info.info {
        Some(Info::PodInfo(p)) => p,
        other => panic!("expected podInfo, got {other:?}"),
    }
}

#[allow(unused_imports)]
pub(crate) use {arm, reason};
