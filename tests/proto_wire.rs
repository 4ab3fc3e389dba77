//! Wire-compatibility tests for the generated protobuf types (`lookout_ingester::proto`): every event kind encoded by
//! protoc decodes (edge cases: `proto_wire_edges.rs`; encoding and the schema itself: `proto_wire_schema.rs`).
//!
//! The bytes under test come from an INDEPENDENT encoder: `protoc --encode`, run against the reference schema in
//! `tests/fixtures/proto/reference/`, which declares Armada's messages with their real proto types (`string`,
//! `map<..>`, embedded k8s messages), unlike `proto/` (strings as `bytes`, maps as repeated entries, raw
//! sub-messages). The reverse direction uses `protoc --decode` on what the crate encodes.
//!
//! Needs `protoc` (`$PROTOC`, else on `PATH`); every test fails with a clear message without it.

mod support;

use std::collections::BTreeMap;

use lookout_ingester::proto::armadaevents::{
    self as ae, EventKind, error::Reason, kubernetes_object, kubernetes_resource_info::Info,
};
use lookout_ingester::proto::{Timestamp, Utf8Repairs, int_text_map};
use support::protoc::*;

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
