//! Builders for Armada event sequences, as a producer would publish them: the one vocabulary the load generator, the
//! tests and the benchmarks share. Times are whole seconds since the Unix epoch (`t`).

use crate::proto::Bytes;
use crate::proto::armadaevents::{self as ev, Event, EventKind, EventSequence, error::Reason};
use crate::proto::k8s::io::api::core::v1::{Container, PodSpec, QuantityMapEntry, ResourceRequirements};
use crate::proto::{Timestamp, armadaevents::kubernetes_main_object};
use prost::Message as _;

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub fn at(t: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds: t, nanos: 0 })
}

/// A timestamp `ms` milliseconds after the Unix epoch.
pub fn at_ms(ms: i64) -> Option<Timestamp> {
    Some(Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 })
}

pub fn event(t: i64, kind: EventKind) -> Event {
    Event { created: at(t), event: Some(kind) }
}

/// One message: a queue, a job set, a user and events.
#[derive(Clone, Debug)]
pub struct Seq {
    pub seq: EventSequence,
}

pub fn seq(queue: &str, jobset: &str) -> Seq {
    Seq {
        seq: EventSequence {
            queue: b(queue),
            job_set_name: b(jobset),
            user_id: b("alice"),
            groups: vec![],
            events: vec![],
        },
    }
}

/// A pod spec with one container requesting the given resources.
pub fn pod(requests: &[(&str, &str)], priority_class: Option<&str>) -> PodSpec {
    PodSpec {
        containers: vec![Container {
            name: Some(b("main")),
            image: Some(b("busybox:latest")),
            command: vec![b("sleep")],
            args: vec![b("10")],
            resources: Some(ResourceRequirements {
                requests: requests.iter().map(|(k, v)| QuantityMapEntry::new(b(k), b(v))).collect(),
                limits: requests.iter().map(|(k, v)| QuantityMapEntry::new(b(k), b(v))).collect(),
                claims: vec![],
            }),
            restart_policy: None,
        }],
        init_containers: vec![],
        priority_class_name: priority_class.map(b),
        resources: None,
    }
}

pub fn submit_job(job: &str, priority: u32, pod_spec: Option<PodSpec>, annotations: &[(&str, &str)]) -> EventKind {
    EventKind::SubmitJob(Box::new(ev::SubmitJob {
        job_id: b(job),
        priority,
        deduplication_id: b(""),
        object_meta: Some(ev::ObjectMeta {
            namespace: b("default"),
            annotations: annotations.iter().map(|(k, v)| ev::StringMapEntry::new(b(k), b(v))).collect(),
            labels: vec![ev::StringMapEntry::new(b("app"), b("test"))],
            ..Default::default()
        }),
        main_object: pod_spec.map(|p| ev::KubernetesMainObject {
            object_meta: None,
            object: Some(kubernetes_main_object::Object::PodSpec(ev::PodSpecWithAvoidList {
                pod_spec: Some(p.encode_to_vec().into()),
                node_avoidlist: vec![],
            })),
        }),
        ..Default::default()
    }))
}

pub fn leased(job: &str, run: &str, executor: &str, node: &str, pool: &str) -> EventKind {
    EventKind::JobRunLeased(Box::new(ev::JobRunLeased {
        executor_id: b(executor),
        node_id: b(node),
        job_id: b(job),
        run_id: b(run),
        pool: b(pool),
        ..Default::default()
    }))
}

pub fn assigned(job: &str, run: &str) -> EventKind {
    EventKind::JobRunAssigned(ev::JobRunAssigned { job_id: b(job), run_id: b(run), ..Default::default() })
}

pub fn running(job: &str, run: &str, node: Option<&str>) -> EventKind {
    let resource_infos = node
        .map(|n| {
            vec![ev::KubernetesResourceInfo {
                object_meta: None,
                info: Some(ev::kubernetes_resource_info::Info::PodInfo(ev::PodInfo { node_name: b(n), pod_number: 0 })),
            }]
        })
        .unwrap_or_default();
    EventKind::JobRunRunning(ev::JobRunRunning { resource_infos, job_id: b(job), run_id: b(run), ..Default::default() })
}

pub fn run_succeeded(job: &str, run: &str) -> EventKind {
    EventKind::JobRunSucceeded(ev::JobRunSucceeded { job_id: b(job), run_id: b(run), ..Default::default() })
}

pub fn job_succeeded(job: &str) -> EventKind {
    EventKind::JobSucceeded(ev::JobSucceeded { job_id: b(job), ..Default::default() })
}

pub fn cancelled_job(job: &str, reason: &str, requestor: &str) -> EventKind {
    EventKind::CancelledJob(ev::CancelledJob { reason: b(reason), job_id: b(job), requestor: b(requestor) })
}

pub fn run_cancelled(job: &str, run: &str, reason: &str, requestor: &str) -> EventKind {
    EventKind::JobRunCancelled(ev::JobRunCancelled {
        job_id: b(job),
        run_id: b(run),
        reason: b(reason),
        requestor: b(requestor),
    })
}

pub fn run_preempted(job: &str, run: &str, reason: &str, preempting_job: &str, requestor: &str) -> EventKind {
    EventKind::JobRunPreempted(ev::JobRunPreempted {
        preempted_job_id: b(job),
        preempted_run_id: b(run),
        reason: b(reason),
        preempting_job_id: b(preempting_job),
        requestor: b(requestor),
    })
}

pub fn requeued(job: &str) -> EventKind {
    EventKind::JobRequeued(ev::JobRequeued { job_id: b(job), ..Default::default() })
}

pub fn reprioritised(job: &str, priority: u32) -> EventKind {
    EventKind::ReprioritisedJob(ev::ReprioritisedJob { priority, job_id: b(job), requestor: b("bob") })
}

pub fn ingress(job: &str, run: &str, addresses: &[(i32, &str)]) -> EventKind {
    EventKind::StandaloneIngressInfo(Box::new(ev::StandaloneIngressInfo {
        ingress_addresses: addresses.iter().map(|(k, v)| ev::Int32StringMapEntry { key: *k, value: b(v) }).collect(),
        job_id: b(job),
        run_id: b(run),
        ..Default::default()
    }))
}

pub fn debug_info(job: &str, run: &str, message: &str) -> EventKind {
    EventKind::JobRunTerminatedDebugInfo(ev::JobRunTerminatedDebugInfo {
        job_id: b(job),
        run_id: b(run),
        debug_message: b(message),
    })
}

/// An `Error` with the given reason and flags.
pub fn error(terminal: bool, reason: Reason, category: &str, subcategory: &str) -> ev::Error {
    ev::Error {
        terminal,
        reason: Some(reason),
        failure_category: b(category),
        failure_subcategory: b(subcategory),
        retry_policy_name: b(""),
    }
}

pub fn pod_error(message: &str, node: &str, exit_codes: &[i32], debug: &str) -> Reason {
    Reason::PodError(ev::PodError {
        message: b(message),
        node_name: b(node),
        container_errors: exit_codes
            .iter()
            .map(|c| ev::ContainerError { exit_code: *c, ..Default::default() })
            .collect(),
        debug_message: b(debug),
        ..Default::default()
    })
}

pub fn lease_returned(message: &str, debug: &str) -> Reason {
    Reason::PodLeaseReturned(ev::PodLeaseReturned {
        message: b(message),
        debug_message: b(debug),
        ..Default::default()
    })
}

pub fn preempted_error(reason: &str) -> Reason {
    Reason::JobRunPreemptedError(ev::JobRunPreemptedError { reason: b(reason) })
}

pub fn rejected(message: &str) -> Reason {
    Reason::JobRejected(ev::JobRejected { message: b(message) })
}

pub fn max_runs(message: &str) -> Reason {
    Reason::MaxRunsExceeded(ev::MaxRunsExceeded { message: b(message) })
}

pub fn run_errors(job: &str, run: &str, errors: Vec<ev::Error>) -> EventKind {
    EventKind::JobRunErrors(ev::JobRunErrors { errors, job_id: b(job), run_id: b(run) })
}

pub fn job_errors(job: &str, errors: Vec<ev::Error>) -> EventKind {
    EventKind::JobErrors(ev::JobErrors { errors, job_id: b(job) })
}

impl Seq {
    pub fn at(mut self, t: i64, kind: EventKind) -> Self {
        self.seq.events.push(event(t, kind));
        self
    }

    /// Appends an event created `ms` milliseconds after the Unix epoch.
    pub fn at_ms(mut self, ms: i64, kind: EventKind) -> Self {
        self.seq.events.push(Event { created: at_ms(ms), event: Some(kind) });
        self
    }

    pub fn user(mut self, user: &str) -> Self {
        self.seq.user_id = b(user);
        self
    }

    pub fn encode(&self) -> Vec<u8> {
        self.seq.encode_to_vec()
    }
}

/// Protobuf's delimited form of several messages (what `apply` reads).
pub fn delimited(messages: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in messages {
        prost::encoding::encode_varint(m.len() as u64, &mut out);
        out.extend_from_slice(m);
    }
    out
}
