//! Wire-compatibility tests for the generated protobuf types (`lookout_ingester::proto`).
//!
//! The bytes under test come from an INDEPENDENT encoder: `protoc --encode`, run against the reference schema in
//! `tests/fixtures/proto/reference/`, which declares Armada's messages with their real proto types (`string`,
//! `map<..>`, embedded k8s messages), unlike `proto/` (strings as `bytes`, maps as repeated entries, raw
//! sub-messages). The reverse direction uses `protoc --decode` on what the crate encodes.
//!
//! Needs `protoc` (`$PROTOC`, else on `PATH`); every test fails with a clear message without it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use prost::Message;
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet, field_descriptor_proto};

use lookout_ingester::proto::armadaevents::{
    self as ae, EventKind, EventSequence, error::Reason, kubernetes_main_object, kubernetes_object,
    kubernetes_resource_info::Info,
};
use lookout_ingester::proto::k8s::io::api::core::v1 as core_v1;
use lookout_ingester::proto::k8s::io::api::networking::v1 as net_v1;
use lookout_ingester::proto::k8s::io::apimachinery::pkg::apis::meta::v1 as meta_v1;
use lookout_ingester::proto::{
    Bytes, Timestamp, Utf8Repairs, api, int_text_map, or_empty, text, text_checked, text_map,
};

// ---------------------------------------------------------------------------------------------------------------
// protoc plumbing
// ---------------------------------------------------------------------------------------------------------------

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> PathBuf {
    manifest_dir().join("tests/fixtures/proto")
}

fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading fixture {}: {e}", path.display()))
}

fn protoc_path() -> PathBuf {
    std::env::var_os("PROTOC").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("protoc"))
}

/// Runs protoc with `stdin`, returns stdout; panics with protoc's stderr on failure.
fn protoc(args: &[String], stdin: &[u8]) -> Vec<u8> {
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
fn reference_args() -> Vec<String> {
    vec![
        format!("-I{}", fixtures().join("reference").display()),
        "armadaevents/events.proto".into(),
        "api/submit.proto".into(),
    ]
}

/// `protoc --encode=<type>` of a text-format message, against the reference schema.
fn protoc_encode(type_name: &str, text_format: &[u8]) -> Vec<u8> {
    let mut args = vec![format!("--encode={type_name}")];
    args.extend(reference_args());
    protoc(&args, text_format)
}

/// `protoc --decode=<type>` of binary bytes, against the reference schema.
fn protoc_decode(type_name: &str, binary: &[u8]) -> String {
    let mut args = vec![format!("--decode={type_name}")];
    args.extend(reference_args());
    String::from_utf8(protoc(&args, binary)).expect("protoc prints UTF-8 here")
}

fn decode_sequence(binary: Vec<u8>) -> EventSequence {
    EventSequence::decode(Bytes::from(binary)).expect("EventSequence decodes")
}

// ---------------------------------------------------------------------------------------------------------------
// small helpers
// ---------------------------------------------------------------------------------------------------------------

/// Text of a bytes-declared string that must be valid UTF-8 in these fixtures.
fn s(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_else(|_| panic!("not UTF-8: {bytes:?}"))
}

/// Text of a proto2 `optional bytes` string (absent → "").
fn o(field: &Option<Bytes>) -> &str {
    s(or_empty(field))
}

fn strings(list: &[Bytes]) -> Vec<&str> {
    list.iter().map(|b| s(b)).collect()
}

fn map(entries: &[impl lookout_ingester::proto::StringEntry]) -> BTreeMap<String, String> {
    let mut repairs = Utf8Repairs::new();
    let m = text_map(entries, &mut repairs);
    assert_eq!(repairs.count(), 0);
    m
}

fn btree<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The resources of a ResourceList as `name → quantity text`.
fn resources(list: &[core_v1::QuantityMapEntry]) -> BTreeMap<String, String> {
    list.iter().map(|e| (s(e.key_bytes()).to_string(), s(e.quantity_bytes()).to_string())).collect()
}

macro_rules! arm {
    ($event:expr, $variant:ident) => {
        match &$event.event {
            Some(EventKind::$variant(inner)) => inner,
            other => panic!("expected {}, got {:?}", stringify!($variant), other),
        }
    };
}

macro_rules! reason {
    ($error:expr, $variant:ident) => {
        match &$error.reason {
            Some(Reason::$variant(inner)) => inner,
            other => panic!("expected reason {}, got {:?}", stringify!($variant), other),
        }
    };
}

const JOB: &str = "01hjob00000000000000000001";
const RUN: &str = "00000000-0000-0000-0000-000000000001";

fn main_pod_spec(submit: &ae::SubmitJob) -> &ae::PodSpecWithAvoidList {
    match submit.main_object.as_ref().and_then(|m| m.object.as_ref()) {
        Some(kubernetes_main_object::Object::PodSpec(p)) => p,
        other => panic!("main object is not a pod spec: {other:?}"),
    }
}

fn pod_info(info: &ae::KubernetesResourceInfo) -> &ae::PodInfo {
    match &info.info {
        Some(Info::PodInfo(p)) => p,
        other => panic!("expected podInfo, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 1. every event kind, encoded by protoc
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn decodes_every_event_kind_encoded_by_protoc() {
    let seq = decode_sequence(protoc_encode("armadaevents.EventSequence", &fixture("event_sequence.txtpb")));

    assert_eq!(s(&seq.queue), "queue-a");
    assert_eq!(s(&seq.job_set_name), "set-1");
    assert_eq!(s(&seq.user_id), "alice");
    assert_eq!(strings(&seq.groups), ["group-1", "group-2"]);
    assert_eq!(seq.events.len(), 25);
    for (i, event) in seq.events.iter().enumerate() {
        assert_eq!(event.created, Some(Timestamp { seconds: 1_700_000_000 + i as i64, nanos: i as i32 }), "event {i}");
    }
    let ev = &seq.events;

    // 0: submitJob
    let submit = arm!(ev[0], SubmitJob);
    assert_eq!(s(&submit.deduplication_id), "dedup-1");
    assert_eq!(submit.priority, 3);
    let meta = submit.object_meta.as_ref().expect("objectMeta");
    assert_eq!(s(&meta.executor_id), "");
    assert_eq!(s(&meta.namespace), "team-a");
    assert_eq!(s(&meta.name), "job-name");
    assert_eq!(s(&meta.kubernetes_id), "");
    assert_eq!(
        map(&meta.annotations),
        btree([("armadaproject.io/externalJobUri", "https://ext.example/1"), ("team", "blue")])
    );
    assert_eq!(map(&meta.labels), btree([("app", "demo")]));
    assert_eq!(submit.lifetime, 60);
    assert!(submit.at_most_once && submit.preemptible && submit.concurrency_safe && submit.is_duplicate);
    assert_eq!(s(&submit.scheduler), "pulsar");
    assert_eq!(s(&submit.job_id), JOB);
    assert_eq!(s(&submit.external_job_uri), "https://ext.example/job");

    let main_object = submit.main_object.as_ref().expect("mainObject");
    assert_eq!(s(&main_object.object_meta.as_ref().expect("main objectMeta").name), "main-object");
    let main = main_pod_spec(submit);
    assert_eq!(strings(&main.node_avoidlist), ["node-x"]);
    let pod = main.decode_pod_spec().expect("pod spec view decodes").expect("pod spec present");
    assert_eq!(o(&pod.priority_class_name), "armada-default");
    assert_eq!(resources(&pod.resources.as_ref().expect("pod-level resources").limits), btree([("cpu", "4")]));
    assert_eq!(pod.init_containers.len(), 1);
    let init = &pod.init_containers[0];
    assert_eq!((o(&init.name), o(&init.image)), ("init", "alpine:3"));
    assert_eq!(strings(&init.command), ["sh"]);
    assert_eq!(strings(&init.args), ["-c", "true"]);
    assert_eq!(o(&init.restart_policy), "Always");
    assert_eq!(resources(&init.resources.as_ref().unwrap().requests), btree([("cpu", "100m")]));
    assert_eq!(pod.containers.len(), 2);
    let c0 = &pod.containers[0];
    assert_eq!((o(&c0.name), o(&c0.image)), ("main", "ubuntu:22.04"));
    assert_eq!(strings(&c0.command), ["python"]);
    assert_eq!(strings(&c0.args), ["run.py"]);
    assert_eq!(c0.restart_policy, None);
    let r0 = c0.resources.as_ref().expect("main container resources");
    assert_eq!(
        resources(&r0.requests),
        btree([("cpu", "1.5"), ("memory", "1Gi"), ("ephemeral-storage", "10Gi"), ("nvidia.com/gpu", "1")])
    );
    assert_eq!(resources(&r0.limits), btree([("cpu", "2"), ("memory", "2Gi")]));
    assert_eq!(r0.request(b"cpu"), Some(&b"1.5"[..]));
    assert_eq!(r0.request(b"nvidia.com/gpu"), Some(&b"1"[..]));
    assert_eq!(r0.request(b"amd.com/gpu"), None);
    assert_eq!(r0.limit(b"memory"), Some(&b"2Gi"[..]));
    assert!(r0.claims.is_empty());
    let c1 = &pod.containers[1];
    assert_eq!((o(&c1.name), o(&c1.image)), ("helper", "busybox"));
    assert_eq!(c1.resources.as_ref().unwrap().request(b"cpu"), Some(&b"250m"[..]));
    // The raw pod spec still holds what the view does not model.
    let raw_pod = protoc_decode("k8s.io.api.core.v1.PodSpec", main.pod_spec.as_ref().unwrap());
    for expected in ["restartPolicy: \"Never\"", "terminationGracePeriodSeconds: 30", "key: \"zone\"", "tolerations {"]
    {
        assert!(raw_pod.contains(expected), "{expected:?} missing from raw pod spec:\n{raw_pod}");
    }

    assert_eq!(submit.objects.len(), 4);
    let obj_meta = |i: usize| submit.objects[i].object_meta.as_ref().expect("object objectMeta");
    // ingress object
    assert_eq!(s(&obj_meta(0).namespace), "team-a");
    assert_eq!(s(&obj_meta(0).name), "ing-1");
    assert_eq!(s(&obj_meta(0).kubernetes_id), "uid-ing");
    assert_eq!(map(&obj_meta(0).labels), btree([("l", "ing")]));
    assert_eq!(map(&obj_meta(0).annotations), btree([("a", "ing")]));
    let Some(kubernetes_object::Object::Ingress(ingress)) = &submit.objects[0].object else {
        panic!("object 0 is not an ingress: {:?}", submit.objects[0].object)
    };
    let ingress_text = protoc_decode("k8s.io.api.networking.v1.IngressSpec", ingress);
    assert!(ingress_text.contains("host: \"h.example\"") && ingress_text.contains("number: 8080"), "{ingress_text}");
    // service object
    assert_eq!((s(&obj_meta(1).name), s(&obj_meta(1).kubernetes_id)), ("svc-1", "uid-svc"));
    let Some(kubernetes_object::Object::Service(service)) = &submit.objects[1].object else {
        panic!("object 1 is not a service: {:?}", submit.objects[1].object)
    };
    let service_text = protoc_decode("k8s.io.api.core.v1.ServiceSpec", service);
    assert!(service_text.contains("type: \"NodePort\"") && service_text.contains("nodePort: 30080"), "{service_text}");
    // extra pod spec, with a quantity that is not a number
    assert_eq!(s(&obj_meta(2).name), "extra-pod");
    let Some(kubernetes_object::Object::PodSpec(extra)) = &submit.objects[2].object else {
        panic!("object 2 is not a pod spec: {:?}", submit.objects[2].object)
    };
    let extra_pod = extra.decode_pod_spec().unwrap().unwrap();
    assert_eq!(o(&extra_pod.containers[0].name), "sidecar");
    assert_eq!(extra_pod.containers[0].resources.as_ref().unwrap().request(b"cpu"), Some(&b"not-a-number"[..]));
    // configMap object
    let Some(kubernetes_object::Object::ConfigMap(config_map)) = &submit.objects[3].object else {
        panic!("object 3 is not a configMap: {:?}", submit.objects[3].object)
    };
    assert!(protoc_decode("k8s.io.api.core.v1.ConfigMap", config_map).contains("key: \"k\""));

    // 1..=6: requests and job-level results
    let e = arm!(ev[1], ReprioritiseJob);
    assert_eq!((e.priority, s(&e.job_id)), (5, JOB));
    assert_eq!(arm!(ev[2], ReprioritiseJobSet).priority, 6);
    let e = arm!(ev[3], ReprioritisedJob);
    assert_eq!((e.priority, s(&e.job_id), s(&e.requestor)), (7, JOB, "alice"));
    let e = arm!(ev[4], CancelJob);
    assert_eq!((s(&e.reason), s(&e.job_id)), ("stop it", JOB));
    let e = arm!(ev[5], CancelJobSet);
    assert_eq!(e.states, [ae::JobState::Pending as i32, ae::JobState::Running as i32]);
    assert_eq!(s(&e.reason), "all of them");
    let e = arm!(ev[6], CancelledJob);
    assert_eq!((s(&e.reason), s(&e.job_id), s(&e.requestor)), ("user request", JOB, "bob"));

    // 7: jobSucceeded
    let e = arm!(ev[7], JobSucceeded);
    assert_eq!(s(&e.job_id), JOB);
    assert_eq!(e.resource_infos.len(), 1);
    assert_eq!(s(&e.resource_infos[0].object_meta.as_ref().unwrap().name), "pod-0");
    let p = pod_info(&e.resource_infos[0]);
    assert_eq!((s(&p.node_name), p.pod_number), ("node-1", 0));

    // 8: jobErrors
    let e = arm!(ev[8], JobErrors);
    assert_eq!(s(&e.job_id), JOB);
    assert_eq!(e.errors.len(), 2);
    assert!(e.errors[0].terminal);
    assert_eq!(s(&reason!(e.errors[0], JobRejected).message), "rejected: too big");
    assert_eq!(s(&e.errors[0].failure_category), "internal");
    assert_eq!(s(&e.errors[0].failure_subcategory), "job-rejected");
    assert_eq!(s(&e.errors[0].retry_policy_name), "");
    assert!(e.errors[1].terminal);
    assert_eq!(s(&reason!(e.errors[1], MaxRunsExceeded).message), "max runs exceeded");
    assert_eq!(s(&e.errors[1].failure_category), "");
    assert_eq!(s(&e.errors[1].failure_subcategory), "max-runs-exceeded");
    assert_eq!(s(&e.errors[1].retry_policy_name), "policy-a");

    // 9: jobRunLeased
    let e = arm!(ev[9], JobRunLeased);
    assert_eq!((s(&e.executor_id), s(&e.node_id), s(&e.pool)), ("exec-1", "node-1", "cpu"));
    assert_eq!((s(&e.job_id), s(&e.run_id)), (JOB, RUN));
    assert_eq!(e.update_sequence_number, 4);
    assert!(e.has_scheduled_at_priority);
    assert_eq!(e.scheduled_at_priority, 1000);
    let overlay = protoc_decode("schedulerobjects.PodRequirements", e.pod_requirements_overlay.as_ref().unwrap());
    assert!(overlay.contains("key: \"away\"") && overlay.contains("preemptionPolicy: \"Never\""), "{overlay}");

    // 10: jobRunAssigned
    let e = arm!(ev[10], JobRunAssigned);
    assert_eq!((s(&e.job_id), s(&e.run_id), s(&e.pool)), (JOB, RUN, "cpu"));
    let m = e.resource_infos[0].object_meta.as_ref().unwrap();
    assert_eq!(
        (s(&m.executor_id), s(&m.namespace), s(&m.name), s(&m.kubernetes_id)),
        ("exec-1", "team-a", "armada-pod-0", "pod-uid-1")
    );
    let p = pod_info(&e.resource_infos[0]);
    assert_eq!((s(&p.node_name), p.pod_number), ("node-1", 0));

    // 11: jobRunRunning
    let e = arm!(ev[11], JobRunRunning);
    assert_eq!((s(&e.job_id), s(&e.run_id), s(&e.pool)), (JOB, RUN, "cpu"));
    assert_eq!(e.resource_infos.len(), 2);
    let p = pod_info(&e.resource_infos[0]);
    assert_eq!((s(&p.node_name), p.pod_number), ("node-2", 1));
    let Some(Info::IngressInfo(ingress_info)) = &e.resource_infos[1].info else {
        panic!("expected ingressInfo: {:?}", e.resource_infos[1])
    };
    assert_eq!(s(&ingress_info.node_name), "node-2");
    let mut repairs = Utf8Repairs::new();
    assert_eq!(
        int_text_map(&ingress_info.ingress_addresses, &mut repairs),
        BTreeMap::from([(8080, "10.0.0.1".to_string())])
    );

    // 12: jobRunSucceeded
    let e = arm!(ev[12], JobRunSucceeded);
    assert_eq!((s(&e.job_id), s(&e.run_id)), (JOB, RUN));
    assert_eq!(s(&pod_info(&e.resource_infos[0]).node_name), "node-2");

    // 13: jobRunErrors, one error per reason arm
    let e = arm!(ev[13], JobRunErrors);
    assert_eq!((s(&e.job_id), s(&e.run_id)), (JOB, RUN));
    let errs = &e.errors;
    assert_eq!(errs.len(), 12);
    assert!(!errs[0].terminal);
    assert_eq!(s(&reason!(errs[0], KubernetesError).resource_type), "ingress");
    assert_eq!(s(&errs[0].failure_category), "k8s");

    assert!(errs[1].terminal);
    let ce = reason!(errs[1], ContainerError);
    assert_eq!(s(&ce.object_meta.as_ref().unwrap().name), "main");
    assert_eq!((ce.exit_code, s(&ce.message), s(&ce.reason)), (137, "killed", "OOMKilled"));
    assert_eq!(ce.kubernetes_reason, ae::KubernetesReason::Oom as i32);
    assert_eq!(
        (s(&errs[1].failure_category), s(&errs[1].failure_subcategory), s(&errs[1].retry_policy_name)),
        ("oom", "container", "retry-oom")
    );

    assert!(!errs[2].terminal);
    assert_eq!(reason!(errs[2], ExecutorError), &ae::ExecutorError {});

    assert!(errs[3].terminal);
    assert_eq!(reason!(errs[3], LeaseExpired), &ae::LeaseExpired {});
    assert_eq!((s(&errs[3].failure_category), s(&errs[3].failure_subcategory)), ("internal", "lease-expired"));

    assert_eq!(s(&reason!(errs[4], MaxRunsExceeded).message), "runs: 3");

    let pe = reason!(errs[5], PodError);
    let pm = pe.object_meta.as_ref().unwrap();
    assert_eq!((s(&pm.name), s(&pm.namespace)), ("armada-pod-0", "team-a"));
    assert_eq!((s(&pe.message), s(&pe.node_name), pe.pod_number), ("pod failed", "node-3", 2));
    assert_eq!(pe.kubernetes_reason, ae::KubernetesReason::Evicted as i32);
    assert_eq!(s(&pe.debug_message), r#"{"pod":"armada-pod-0"}"#);
    assert_eq!(pe.container_errors.len(), 2);
    let c = &pe.container_errors[0];
    assert_eq!(s(&c.object_meta.as_ref().unwrap().name), "main");
    assert_eq!((c.exit_code, s(&c.message), s(&c.reason)), (1, "boom", "Error"));
    assert_eq!(c.kubernetes_reason, ae::KubernetesReason::AppError as i32);
    assert_eq!(pe.container_errors[1].exit_code, 2);
    assert_eq!(pe.container_errors[1].kubernetes_reason, ae::KubernetesReason::DeadlineExceeded as i32);
    assert_eq!(s(&errs[5].failure_category), "user-error");

    assert!(!errs[6].terminal);
    let lr = reason!(errs[6], PodLeaseReturned);
    assert_eq!(s(&lr.object_meta.as_ref().unwrap().name), "armada-pod-0");
    assert_eq!((s(&lr.message), lr.pod_number, lr.run_attempted), ("lease returned", 3, true));
    assert_eq!(s(&lr.debug_message), "returned-debug");

    assert_eq!(s(&reason!(errs[7], JobRunPreemptedError).reason), "preempted by X");
    assert_eq!(s(&reason!(errs[8], GangJobUnschedulable).message), "gang unschedulable");
    assert_eq!(s(&reason!(errs[9], JobRejected).message), "run rejected");
    assert_eq!(s(&reason!(errs[10], ReconciliationError).message), "reconciliation failed");
    assert!(errs[11].terminal);
    assert_eq!(errs[11].reason, None);
    assert_eq!(s(&errs[11].failure_category), "no-reason");

    // 14: standaloneIngressInfo
    let e = arm!(ev[14], StandaloneIngressInfo);
    let m = e.object_meta.as_ref().unwrap();
    assert_eq!((s(&m.name), s(&m.namespace)), ("ing-1", "team-a"));
    assert_eq!(
        int_text_map(&e.ingress_addresses, &mut repairs),
        BTreeMap::from([(443, "https://10.0.0.2".to_string()), (8080, "http://10.0.0.2:8080".to_string())])
    );
    assert_eq!((s(&e.node_name), e.pod_number), ("node-4", 5));
    assert_eq!((s(&e.pod_name), s(&e.pod_namespace)), ("armada-pod-5", "team-a"));
    assert_eq!((s(&e.job_id), s(&e.run_id)), (JOB, RUN));
    assert_eq!(repairs.count(), 0);

    // 15: resourceUtilisation (ignored by the ingester, but must decode, bad quantity included)
    let e = arm!(ev[15], ResourceUtilisation);
    assert_eq!(s(&pod_info(e.resource_info.as_ref().unwrap()).node_name), "node-5");
    let quantity_map = |list: &[ae::QuantityMapEntry]| -> Vec<(String, String)> {
        list.iter().map(|q| (s(&q.key).to_string(), s(q.value.as_ref().unwrap().as_bytes()).to_string())).collect()
    };
    assert_eq!(quantity_map(&e.max_resources_for_period), [("cpu".into(), "3".into())]);
    assert_eq!(quantity_map(&e.total_cumulative_usage), [("memory".into(), "not-a-number".into())]);
    assert_eq!(quantity_map(&e.avg_resources_for_period), [("cpu".into(), "1500m".into())]);
    assert_eq!((s(&e.job_id), s(&e.run_id)), (JOB, RUN));

    // 16: jobRunPreempted
    let e = arm!(ev[16], JobRunPreempted);
    assert_eq!((s(&e.preempted_job_id), s(&e.preempted_run_id)), (JOB, RUN));
    assert_eq!(s(&e.reason), "preempted by a higher priority job");
    assert_eq!((s(&e.preempting_job_id), s(&e.requestor)), ("01hjob00000000000000000002", "carol"));

    // 17..=23
    let e = arm!(ev[17], PartitionMarker);
    assert_eq!((s(&e.group_id), e.partition), ("group-7", 7));
    let e = arm!(ev[18], JobRunPreemptionRequested);
    assert_eq!((s(&e.job_id), s(&e.run_id)), (JOB, RUN));
    let e = arm!(ev[19], JobRequeued);
    assert_eq!((e.update_sequence_number, s(&e.job_id)), (8, JOB));
    let info = protoc_decode("schedulerobjects.JobSchedulingInfo", e.scheduling_info.as_ref().unwrap());
    assert!(info.contains("priority_class_name: \"pc\"") && info.contains("version: 2"), "{info}");
    let e = arm!(ev[20], JobPreemptionRequested);
    assert_eq!((s(&e.job_id), s(&e.reason)), (JOB, "make room"));
    let e = arm!(ev[21], JobRunCancelled);
    assert_eq!((s(&e.job_id), s(&e.run_id)), (JOB, RUN));
    assert_eq!((s(&e.reason), s(&e.requestor)), ("cancelled by user", "dave"));
    let e = arm!(ev[22], JobValidated);
    assert_eq!((strings(&e.pools), s(&e.job_id)), (vec!["cpu", "gpu"], JOB));
    let e = arm!(ev[23], JobRunTerminatedDebugInfo);
    assert_eq!((s(&e.job_id), s(&e.run_id)), (JOB, RUN));
    assert_eq!(s(&e.debug_message), r#"{"schemaVersion":1,"trigger":"cancelled"}"#);

    // 24: no arm
    assert_eq!(ev[24].event, None);
}

// ---------------------------------------------------------------------------------------------------------------
// 2. invalid UTF-8 in string fields
// ---------------------------------------------------------------------------------------------------------------

/// A prost message that declares `queue` as a real `string`, as a strict decoder would.
#[derive(Clone, PartialEq, Message)]
struct StrictEventSequence {
    #[prost(string, tag = "1")]
    queue: String,
}

#[test]
fn invalid_utf8_in_string_fields_decodes_and_is_reported() {
    let text_format = fixture("invalid_utf8.txtpb");
    let markers = String::from_utf8(text_format.clone())
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| l.matches("~~").count())
        .sum::<usize>();
    let mut binary = protoc_encode("armadaevents.EventSequence", &text_format);
    let mut patched = 0;
    for i in 0..binary.len().saturating_sub(1) {
        if &binary[i..i + 2] == b"~~" {
            binary[i] = 0xFF;
            binary[i + 1] = 0xFE;
            patched += 1;
        }
    }
    assert_eq!(patched, markers, "every marker (and nothing else) must be patched");

    // A strict decoder loses the whole message; ours does not.
    assert!(StrictEventSequence::decode(&binary[..]).is_err(), "the fixture must really be invalid UTF-8");
    let seq = decode_sequence(binary);

    const BAD: &str = "\u{FFFD}\u{FFFD}";
    assert_eq!(text_checked(&seq.queue), (format!("queue-{BAD}").into(), true));
    assert_eq!(text_checked(&seq.job_set_name), ("set-1".into(), false));
    assert_eq!(text(&seq.user_id), format!("us{BAD}er"));

    let mut repairs = Utf8Repairs::new();
    assert_eq!(repairs.string(&seq.groups[0]), format!("g{BAD}"));
    assert_eq!(repairs.text(&seq.job_set_name), "set-1");
    assert_eq!(repairs.count(), 1);

    let submit = arm!(seq.events[0], SubmitJob);
    assert_eq!(repairs.string(&submit.job_id), format!("job{BAD}"));
    let meta = submit.object_meta.as_ref().unwrap();
    assert_eq!(repairs.string(&meta.namespace), format!("ns{BAD}"));
    assert_eq!(
        text_map(&meta.annotations, &mut repairs),
        BTreeMap::from([(format!("key{BAD}"), format!("value{BAD}"))])
    );
    assert_eq!(text_map(&meta.labels, &mut repairs), BTreeMap::from([("app".to_string(), BAD.to_string())]));
    assert_eq!(repairs.count(), 6);

    let pod = main_pod_spec(submit).decode_pod_spec().expect("view decodes").expect("present");
    assert_eq!(text_checked(or_empty(&pod.priority_class_name)), (format!("pc{BAD}").into(), true));
    let container = &pod.containers[0];
    assert_eq!(text(or_empty(&container.name)), format!("main{BAD}"));
    let requests = &container.resources.as_ref().unwrap().requests;
    assert_eq!(requests[0].key_bytes(), b"cpu\xFF\xFE");
    assert_eq!(requests[0].quantity_bytes(), b"1\xFF\xFE");

    let run_errors = arm!(seq.events[1], JobRunErrors);
    let pod_error = reason!(run_errors.errors[0], PodError);
    assert_eq!(repairs.string(&pod_error.message), format!("failed{BAD}"));
    assert_eq!(repairs.string(&pod_error.node_name), format!("node{BAD}"));
    assert_eq!(repairs.string(&run_errors.errors[0].failure_category), format!("cat{BAD}"));
    assert_eq!(repairs.string(&run_errors.run_id), format!("run{BAD}"));

    let ingress = arm!(seq.events[2], StandaloneIngressInfo);
    assert_eq!(int_text_map(&ingress.ingress_addresses, &mut repairs), BTreeMap::from([(80, format!("http://{BAD}"))]));

    let cancelled = arm!(seq.events[3], CancelledJob);
    assert_eq!(repairs.string(&cancelled.reason), format!("reason{BAD}"));
    assert_eq!(repairs.string(&cancelled.requestor), format!("req{BAD}"));
    assert_eq!(repairs.count(), 13);
}

// ---------------------------------------------------------------------------------------------------------------
// 3. unknown fields and unknown oneof arms (hand-built wire bytes)
// ---------------------------------------------------------------------------------------------------------------

fn put_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(field: u32, wire_type: u8, out: &mut Vec<u8>) {
    put_varint((u64::from(field) << 3) | u64::from(wire_type), out);
}

fn put_len(field: u32, payload: &[u8], out: &mut Vec<u8>) {
    put_key(field, 2, out);
    put_varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

fn put_uint(field: u32, v: u64, out: &mut Vec<u8>) {
    put_key(field, 0, out);
    put_varint(v, out);
}

fn timestamp(seconds: u64) -> Vec<u8> {
    let mut t = Vec::new();
    put_uint(1, seconds, &mut t);
    t
}

/// Unknown fields of every wire type.
fn put_unknowns(out: &mut Vec<u8>) {
    put_uint(90, 5, out);
    put_len(91, b"from the future", out);
    put_key(92, 1, out);
    out.extend_from_slice(&42u64.to_le_bytes());
    put_key(93, 5, out);
    out.extend_from_slice(&7u32.to_le_bytes());
    put_key(94, 3, out); // group start
    put_uint(1, 1, out);
    put_key(94, 4, out); // group end
}

#[test]
fn unknown_fields_and_oneof_arms_are_skipped() {
    let mut binary = protoc_encode("armadaevents.EventSequence", b"queue: \"q\" job_set_name: \"s\"");

    // event 0: known arm, with unknown fields inside the event and inside the arm's message
    let mut running = Vec::new();
    put_len(4, b"job-1", &mut running);
    put_unknowns(&mut running);
    put_len(5, b"run-1", &mut running);
    let mut event = Vec::new();
    put_len(18, &timestamp(1_700_000_200), &mut event);
    put_unknowns(&mut event);
    put_len(12, &running, &mut event);
    put_len(5, &event, &mut binary);

    // event 1: unknown oneof arm 99
    let mut event = Vec::new();
    put_len(18, &timestamp(1_700_000_201), &mut event);
    put_len(99, b"\x0a\x03abc", &mut event);
    put_len(5, &event, &mut binary);

    // event 2: arm 15, unused by Armada
    let mut event = Vec::new();
    put_len(18, &timestamp(1_700_000_202), &mut event);
    put_len(15, b"", &mut event);
    put_len(5, &event, &mut binary);

    // event 3: an Error with an unknown reason arm (19)
    let mut error = Vec::new();
    put_uint(1, 1, &mut error);
    put_len(19, b"\x0a\x01x", &mut error);
    put_len(16, b"cat", &mut error);
    let mut run_errors = Vec::new();
    put_len(3, &error, &mut run_errors);
    put_len(4, b"job-1", &mut run_errors);
    let mut event = Vec::new();
    put_len(14, &run_errors, &mut event);
    put_len(18, &timestamp(1_700_000_203), &mut event);
    put_len(5, &event, &mut binary);

    // event 4: completely empty
    put_len(5, b"", &mut binary);

    // unknown fields at the top level, after the events
    put_unknowns(&mut binary);
    put_len(3, b"user", &mut binary);

    let seq = decode_sequence(binary);
    assert_eq!((s(&seq.queue), s(&seq.job_set_name), s(&seq.user_id)), ("q", "s", "user"));
    assert_eq!(seq.events.len(), 5);

    let created = |i: usize| seq.events[i].created.map(|t| t.seconds);
    assert_eq!(created(0), Some(1_700_000_200));
    let running = arm!(seq.events[0], JobRunRunning);
    assert_eq!((s(&running.job_id), s(&running.run_id)), ("job-1", "run-1"));

    assert_eq!((created(1), &seq.events[1].event), (Some(1_700_000_201), &None));
    assert_eq!((created(2), &seq.events[2].event), (Some(1_700_000_202), &None));

    assert_eq!(created(3), Some(1_700_000_203));
    let run_errors = arm!(seq.events[3], JobRunErrors);
    assert_eq!(run_errors.errors.len(), 1);
    assert!(run_errors.errors[0].terminal);
    assert_eq!(run_errors.errors[0].reason, None);
    assert_eq!(s(&run_errors.errors[0].failure_category), "cat");

    assert_eq!(seq.events[4], ae::Event::default());
}

// ---------------------------------------------------------------------------------------------------------------
// 4. quantities are kept as text
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn quantities_are_kept_unparsed() {
    let binary = protoc_encode(
        "k8s.io.api.core.v1.ResourceRequirements",
        br#"
        requests { key: "cpu" value { string: "not-a-number" } }
        requests { key: "memory" value { string: "" } }
        requests { key: "huge" value { string: "1e400" } }
        requests { key: "neg" value { string: "-5Mi" } }
        requests { key: "absent" }
        requests { key: "cpu" value { string: "250m" } }
        limits { key: "nvidia.com/gpu" value { } }
        "#,
    );
    // protoc (like Go) always writes a map entry's value; append an entry without one by hand.
    let mut binary = binary;
    let mut entry = Vec::new();
    put_len(1, b"no-value", &mut entry);
    put_len(2, &entry, &mut binary);
    let rr = core_v1::ResourceRequirements::decode(&binary[..]).expect("ResourceRequirements decodes");
    assert_eq!(rr.requests.len(), 7);
    assert_eq!(rr.requests[0].quantity_bytes(), b"not-a-number");
    assert_eq!(rr.requests[2].quantity_bytes(), b"1e400");
    assert_eq!(rr.request(b"neg"), Some(&b"-5Mi"[..]));
    assert_eq!(rr.request(b"memory"), Some(&b""[..]));
    assert_eq!(rr.requests[4].value, Some(Default::default()));
    assert_eq!(rr.request(b"absent"), Some(&b""[..]));
    assert_eq!(rr.requests[6].value, None);
    assert_eq!(rr.request(b"no-value"), Some(&b""[..]));
    // A repeated key: the last entry wins, as for a decoded map.
    assert_eq!(rr.request(b"cpu"), Some(&b"250m"[..]));
    assert_eq!(rr.limits[0].value.as_ref().map(|q| q.string.clone()), Some(None));
    assert_eq!(rr.limit(b"nvidia.com/gpu"), Some(&b""[..]));
}

// ---------------------------------------------------------------------------------------------------------------
// 5. api.Job encoded by us, decoded by protoc
// ---------------------------------------------------------------------------------------------------------------

fn k8s_meta(meta: &ae::ObjectMeta) -> meta_v1::ObjectMeta {
    let entries = |list: &[ae::StringMapEntry]| {
        list.iter().map(|e| meta_v1::StringMapEntry::new(e.key.clone(), e.value.clone())).collect()
    };
    let some = |b: &Bytes| (!b.is_empty()).then(|| b.clone());
    meta_v1::ObjectMeta {
        name: some(&meta.name),
        generate_name: None,
        namespace: some(&meta.namespace),
        uid: some(&meta.kubernetes_id),
        labels: entries(&meta.labels),
        annotations: entries(&meta.annotations),
    }
}

#[test]
fn api_job_encoded_by_us_decodes_with_protoc() {
    let seq = decode_sequence(protoc_encode("armadaevents.EventSequence", &fixture("event_sequence.txtpb")));
    let submit = arm!(seq.events[0], SubmitJob);
    let meta = submit.object_meta.as_ref().unwrap();
    let api_entries = |list: &[ae::StringMapEntry]| {
        list.iter().map(|e| api::StringMapEntry::new(e.key.clone(), e.value.clone())).collect()
    };

    let mut k8s_ingress = Vec::new();
    let mut k8s_service = Vec::new();
    let mut pod_specs = Vec::new();
    for object in &submit.objects {
        let metadata = object.object_meta.as_ref().map(k8s_meta);
        match &object.object {
            Some(kubernetes_object::Object::Ingress(spec)) => {
                k8s_ingress.push(net_v1::Ingress { metadata, spec: Some(spec.clone()) })
            }
            Some(kubernetes_object::Object::Service(spec)) => {
                k8s_service.push(core_v1::Service { metadata, spec: Some(spec.clone()) })
            }
            Some(kubernetes_object::Object::PodSpec(p)) => pod_specs.push(p.pod_spec.clone().unwrap()),
            _ => {}
        }
    }

    let job = api::Job {
        id: submit.job_id.clone(),
        client_id: submit.deduplication_id.clone(),
        job_set_id: seq.job_set_name.clone(),
        queue: seq.queue.clone(),
        namespace: meta.namespace.clone(),
        labels: api_entries(&meta.labels),
        annotations: api_entries(&meta.annotations),
        required_node_labels: Vec::new(),
        owner: seq.user_id.clone(),
        queue_ownership_user_groups: Vec::new(),
        compressed_queue_ownership_user_groups: Bytes::new(),
        priority: f64::from(submit.priority),
        pod_spec: main_pod_spec(submit).pod_spec.clone(),
        pod_specs,
        scheduling_resource_requirements: Some(core_v1::ResourceRequirements {
            limits: vec![core_v1::QuantityMapEntry::new("cpu", "2")],
            requests: vec![
                core_v1::QuantityMapEntry::new("cpu", "1850m"),
                core_v1::QuantityMapEntry::new("memory", "1Gi"),
            ],
            claims: Vec::new(),
        }),
        created: seq.events[0].created,
        ingress: Vec::new(),
        services: Vec::new(),
        k8s_ingress,
        k8s_service,
        scheduler: Bytes::new(),
    };
    let ours = protoc_decode("api.Job", &job.encode_to_vec());

    // Canonical form of the expectation: the fixture passed through protoc both ways.
    let expected = protoc_decode("api.Job", &protoc_encode("api.Job", &fixture("api_job.expected.txtpb")));
    assert_eq!(ours, expected, "protoc's view of our api.Job differs from api_job.expected.txtpb");
    // The copied pod spec bytes print as a real PodSpec, including what the crate does not model.
    for needle in ["pod_spec {", "containers {", "name: \"main\"", "tolerations {", "nodeSelector {", "pod_specs {"] {
        assert!(ours.contains(needle), "{needle:?} missing from:\n{ours}");
    }
    // And Rust reads it back the same.
    assert_eq!(api::Job::decode(&job.encode_to_vec()[..]).unwrap(), job);
}

// ---------------------------------------------------------------------------------------------------------------
// 6. the schema under proto/ is wire-compatible with the reference schema
// ---------------------------------------------------------------------------------------------------------------

fn descriptor_set(include: &str, files: &[&str]) -> FileDescriptorSet {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("set.pb");
    let mut args = vec![
        format!("-I{}", manifest_dir().join(include).display()),
        "--include_imports".to_string(),
        format!("--descriptor_set_out={}", out.display()),
    ];
    args.extend(files.iter().map(|f| f.to_string()));
    protoc(&args, b"");
    FileDescriptorSet::decode(&std::fs::read(out).expect("descriptor set")[..]).expect("descriptor set decodes")
}

/// All messages by full name (".pkg.Outer.Inner").
fn messages(set: &FileDescriptorSet) -> BTreeMap<String, DescriptorProto> {
    fn walk(prefix: &str, msg: &DescriptorProto, out: &mut BTreeMap<String, DescriptorProto>) {
        let name = format!("{prefix}.{}", msg.name());
        for nested in &msg.nested_type {
            walk(&name, nested, out);
        }
        out.insert(name, msg.clone());
    }
    let mut out = BTreeMap::new();
    for file in &set.file {
        for msg in &file.message_type {
            walk(&format!(".{}", file.package()), msg, &mut out);
        }
    }
    out
}

fn is_map_entry(msg: &DescriptorProto) -> bool {
    msg.options.as_ref().is_some_and(|o| o.map_entry())
}

fn oneof_name(msg: &DescriptorProto, field: &FieldDescriptorProto) -> Option<String> {
    if field.proto3_optional() {
        return None; // synthetic oneof of a proto3 `optional`
    }
    field.oneof_index.map(|i| msg.oneof_decl[i as usize].name().to_string())
}

/// Checks that `ours` reads/writes the same bytes as `reference` (see the module docs of `lookout_ingester::proto`).
fn check_field(
    ctx: &str,
    ours: &FieldDescriptorProto,
    ours_msgs: &BTreeMap<String, DescriptorProto>,
    reference: &FieldDescriptorProto,
    ref_msgs: &BTreeMap<String, DescriptorProto>,
    errors: &mut Vec<String>,
) {
    use field_descriptor_proto::{Label, Type};
    let mut fail = |why: &str| errors.push(format!("{ctx}: {why} (ours {ours:?} vs reference {reference:?})"));
    if ours.name() != reference.name() {
        fail("name differs");
    }
    let ref_map =
        (reference.r#type() == Type::Message).then(|| &ref_msgs[reference.type_name()]).filter(|m| is_map_entry(m));
    if let Some(ref_entry) = ref_map {
        // map<K, V> ↔ repeated <X>MapEntry { K' key = 1; V' value = 2; }
        if ours.r#type() != Type::Message || ours.label() != Label::Repeated || !ours.type_name().ends_with("MapEntry")
        {
            return fail("a map must be a repeated ...MapEntry");
        }
        let our_entry = &ours_msgs[ours.type_name()];
        for number in [1, 2] {
            let of = our_entry.field.iter().find(|f| f.number() == number);
            let rf = ref_entry.field.iter().find(|f| f.number() == number).unwrap();
            match of {
                Some(of) => check_field(&format!("{ctx} entry"), of, ours_msgs, rf, ref_msgs, errors),
                None => errors.push(format!("{ctx}: map entry lacks field {number}")),
            }
        }
        if our_entry.field.len() != 2 {
            errors.push(format!("{ctx}: map entry must have exactly key and value"));
        }
        return;
    }
    let ours_repeated = ours.label() == Label::Repeated;
    if ours_repeated != (reference.label() == Label::Repeated) {
        return fail("cardinality differs");
    }
    match (reference.r#type(), ours.r#type()) {
        // Strings are bytes (lenient UTF-8); sub-messages may be raw bytes.
        (Type::String, Type::Bytes) | (Type::Message, Type::Bytes) => {}
        (Type::String, _) => fail("a string must be declared bytes"),
        (Type::Message, Type::Message) | (Type::Enum, Type::Enum) => {
            if ours.type_name() != reference.type_name() {
                fail("type name differs");
            }
        }
        (r, o) if r == o => {}
        _ => fail("type differs"),
    }
}

/// Everything that makes the schema under `ours_dir` not wire-compatible with the reference schema.
fn compatibility_errors(ours_dir: &str) -> Vec<String> {
    let files = ["armadaevents/events.proto", "api/submit.proto"];
    let ours_set = descriptor_set(ours_dir, &files);
    let ref_set = descriptor_set("tests/fixtures/proto/reference", &files);
    let ours = messages(&ours_set);
    let reference = messages(&ref_set);
    let mut errors = Vec::new();

    for (name, msg) in &ours {
        if name.ends_with("MapEntry") {
            continue; // our stand-ins for map entries, checked with the map fields
        }
        let Some(ref_msg) = reference.get(name) else {
            errors.push(format!("{name}: not in the reference schema"));
            continue;
        };
        let ref_fields: BTreeMap<i32, &FieldDescriptorProto> = ref_msg.field.iter().map(|f| (f.number(), f)).collect();
        for field in &msg.field {
            let ctx = format!("{name}.{}", field.name());
            match ref_fields.get(&field.number()) {
                None => errors.push(format!("{ctx} = {}: not in the reference schema", field.number())),
                Some(rf) => {
                    check_field(&ctx, field, &ours, rf, &reference, &mut errors);
                    if oneof_name(msg, field) != oneof_name(ref_msg, rf) {
                        errors.push(format!("{ctx}: oneof membership differs"));
                    }
                }
            }
        }
        let reserved =
            |m: &DescriptorProto| m.reserved_range.iter().map(|r| (r.start(), r.end())).collect::<BTreeSet<_>>();
        if reserved(msg) != reserved(ref_msg) {
            errors.push(format!("{name}: reserved ranges differ"));
        }
        // armadaevents messages and api.Job must be complete: every Armada field declared.
        if name.starts_with(".armadaevents.") || name == ".api.Job" {
            let ours_numbers: BTreeSet<i32> = msg.field.iter().map(|f| f.number()).collect();
            for rf in &ref_msg.field {
                if !ours_numbers.contains(&rf.number()) {
                    errors.push(format!("{name}: lacks {} = {}", rf.name(), rf.number()));
                }
            }
        }
    }
    // Every armadaevents message of the reference exists here too.
    for name in reference.keys().filter(|n| n.starts_with(".armadaevents.") && !is_map_entry(&reference[*n])) {
        if !ours.contains_key(name) {
            errors.push(format!("{name}: missing from proto/"));
        }
    }
    // Enums: same values.
    let enums = |set: &FileDescriptorSet| -> BTreeMap<String, Vec<(String, i32)>> {
        set.file
            .iter()
            .flat_map(|f| {
                f.enum_type.iter().map(move |e| {
                    let values = e.value.iter().map(|v| (v.name().to_string(), v.number())).collect();
                    (format!(".{}.{}", f.package(), e.name()), values)
                })
            })
            .collect()
    };
    let (ours_enums, ref_enums) = (enums(&ours_set), enums(&ref_set));
    for (name, values) in &ours_enums {
        if ref_enums.get(name) != Some(values) {
            errors.push(format!("enum {name} differs from the reference"));
        }
    }
    for name in [".armadaevents.KubernetesReason", ".armadaevents.JobState"] {
        if !ours_enums.contains_key(name) {
            errors.push(format!("enum {name} missing"));
        }
    }
    errors
}

#[test]
fn schema_is_wire_compatible_with_reference() {
    let errors = compatibility_errors("proto");
    assert!(errors.is_empty(), "proto/ is not wire-compatible with the reference schema:\n{}", errors.join("\n"));
}

/// The checker itself: the reference schema, with its real `string`s and maps, must be rejected as "ours".
#[test]
fn schema_check_rejects_strict_strings_and_maps() {
    let errors = compatibility_errors("tests/fixtures/proto/reference");
    let has = |needle: &str| errors.iter().any(|e| e.contains(needle));
    assert!(has(".armadaevents.EventSequence.queue: a string must be declared bytes"), "{errors:#?}");
    assert!(has(".armadaevents.ObjectMeta.annotations: a map must be a repeated ...MapEntry"), "{errors:#?}");
}
