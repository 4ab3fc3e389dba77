//! The `job_spec` payload: an `api.Job` re-encoded from `SubmitJob` (docs/compatibility.md §2.11), which Lookout decompresses and
//! decodes to show the job's YAML, containers and logs.
//!
//! Pod specs are copied as the submitter sent them (the raw sub-message bytes), so nothing is lost, except that
//! every quantity in them is written as Armada's Go round trip writes it and one Go cannot parse becomes `0`
//! (`pod_quantities`); a pod spec that does not even frame is left out. With one pod spec it goes in `pod_spec` (5); with more, the main one first and then the extra ones go in
//! `pod_specs` (12). Extra ingress and service objects become `k8s_ingress` / `k8s_service` with their metadata.
//! Text fields are valid UTF-8 (invalid sequences replaced). A submit without a usable main pod spec still gets a
//! spec, with its metadata and without pod spec (docs/compatibility.md D10).

use std::collections::BTreeMap;

use crate::message::Ts;
use crate::proto::api::{self, StringMapEntry as ApiEntry};
use crate::proto::armadaevents::{
    KubernetesObject, ObjectMeta, StringMapEntry, SubmitJob, kubernetes_main_object, kubernetes_object,
};
use crate::proto::k8s::io::api::core::v1::{self as core_v1, PodSpec, QuantityMapEntry, ResourceRequirements};
use crate::proto::k8s::io::api::networking::v1 as networking_v1;
use crate::proto::k8s::io::apimachinery::pkg::apis::meta::v1 as meta_v1;
use crate::proto::{Bytes, Timestamp, text};

use super::Fixer;
use super::pod_quantities;
use super::quantity::{Quantity, Slot};

/// What the spec is built from, besides the submit itself.
pub struct SpecInput<'a> {
    pub job_id: &'a str,
    pub queue: &'a str,
    pub jobset: &'a str,
    pub owner: &'a str,
    pub namespace: &'a str,
    pub created: Ts,
    pub submit: &'a SubmitJob,
    /// The main pod spec, decoded (the caller decodes it once, for the job's columns too).
    pub main_pod: Option<&'a PodSpec>,
}

pub fn api_job(input: &SpecInput<'_>, fx: &mut Fixer) -> api::Job {
    let e = input.submit;
    let meta = e.object_meta.as_ref();
    let main_raw: Option<&Bytes> = match e.main_object.as_ref().and_then(|o| o.object.as_ref()) {
        Some(kubernetes_main_object::Object::PodSpec(p)) => p.pod_spec.as_ref(),
        None => None,
    };
    let mut pod_specs: Vec<Bytes> = main_raw.into_iter().filter_map(|raw| as_armada_writes(raw, fx)).collect();
    let mut k8s_ingress = Vec::new();
    let mut k8s_service = Vec::new();
    for object in &e.objects {
        match &object.object {
            Some(kubernetes_object::Object::PodSpec(p)) => {
                pod_specs.extend(p.pod_spec.as_ref().and_then(|raw| as_armada_writes(raw, fx)))
            }
            Some(kubernetes_object::Object::Ingress(spec)) => {
                k8s_ingress
                    .push(networking_v1::Ingress { metadata: Some(object_meta(object)), spec: Some(spec.clone()) });
            }
            Some(kubernetes_object::Object::Service(spec)) => {
                k8s_service.push(core_v1::Service { metadata: Some(object_meta(object)), spec: Some(spec.clone()) });
            }
            // The reference crashes on these (docs/compatibility.md D10); we leave them out of the spec and say so.
            Some(kubernetes_object::Object::ConfigMap(raw)) => {
                fx.record("job_spec.objects", "unsupported_config_map", raw.to_vec())
            }
            None => fx.record("job_spec.objects", "empty_object", Vec::new()),
        }
    }
    let (pod_spec, pod_specs) = if pod_specs.len() == 1 { (pod_specs.pop(), Vec::new()) } else { (None, pod_specs) };

    api::Job {
        id: owned(input.job_id),
        client_id: lossy(&e.deduplication_id),
        job_set_id: owned(input.jobset),
        queue: owned(input.queue),
        namespace: owned(input.namespace),
        labels: meta.map(|m| entries(&m.labels)).unwrap_or_default(),
        annotations: meta.map(|m| entries(&m.annotations)).unwrap_or_default(),
        owner: owned(input.owner),
        priority: f64::from(e.priority),
        pod_spec,
        pod_specs,
        scheduling_resource_requirements: input.main_pod.map(|pod| scheduling_requirements(pod, fx)),
        created: Some(Timestamp {
            seconds: input.created.div_euclid(1_000_000),
            nanos: (input.created.rem_euclid(1_000_000) * 1000) as i32,
        }),
        k8s_ingress,
        k8s_service,
        ..Default::default()
    }
}

fn owned(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn lossy(b: &[u8]) -> Bytes {
    owned(&text(b))
}

/// A map's entries with valid UTF-8 keys and values; a repeated key keeps its last value, as a map would.
fn entries(list: &[StringMapEntry]) -> Vec<ApiEntry> {
    let map: BTreeMap<String, String> =
        list.iter().map(|e| (text(&e.key).into_owned(), text(&e.value).into_owned())).collect();
    map.into_iter().map(|(k, v)| ApiEntry::new(k.into_bytes(), v.into_bytes())).collect()
}

/// k8s metadata of an extra object, from Armada's metadata message.
fn object_meta(object: &KubernetesObject) -> meta_v1::ObjectMeta {
    let m: ObjectMeta = object.object_meta.clone().unwrap_or_default();
    let opt = |b: &[u8]| (!b.is_empty()).then(|| lossy(b));
    let map = |list: &[StringMapEntry]| -> Vec<meta_v1::StringMapEntry> {
        entries(list).into_iter().map(|e| meta_v1::StringMapEntry::new(e.key, e.value)).collect()
    };
    meta_v1::ObjectMeta {
        name: opt(&m.name),
        namespace: opt(&m.namespace),
        uid: opt(&m.kubernetes_id),
        labels: map(&m.labels),
        annotations: map(&m.annotations),
        ..Default::default()
    }
}

/// A pod spec with its quantities as Armada writes them; None (recorded) when it does not decode.
fn as_armada_writes(raw: &Bytes, fx: &mut Fixer) -> Option<Bytes> {
    match pod_quantities::rewrite(raw) {
        Ok((rewritten, bad)) => {
            for original in bad {
                fx.record("job_spec.pod_spec", "bad_quantity", original);
            }
            Some(rewritten.map(Bytes::from).unwrap_or_else(|| raw.clone()))
        }
        Err(pod_quantities::Malformed) => {
            fx.record("job_spec.pod_spec", "undecodable_pod_spec", raw.to_vec());
            None
        }
    }
}

/// One container's resource map: a repeated key keeps its last value, as Go's map decoding does.
fn resource_map(
    c: &core_v1::Container,
    pick: fn(&ResourceRequirements) -> &[QuantityMapEntry],
) -> BTreeMap<String, &QuantityMapEntry> {
    let entries = c.resources.as_ref().map(pick).unwrap_or_default();
    entries.iter().map(|e| (text(e.key_bytes()).into_owned(), e)).collect()
}

/// A quantity as Go decodes it: a missing one is zero, and so is one Go cannot parse (it is stored as `0`, see
/// [`as_armada_writes`]).
fn go_quantity(entry: &QuantityMapEntry) -> Quantity {
    entry
        .value
        .as_ref()
        .and_then(|q| q.string.as_deref())
        .and_then(|raw| Quantity::parse(raw).ok())
        .unwrap_or_else(Quantity::zero)
}

/// Requests and limits the scheduler reasons about, as Armada's `SchedulingResourceRequirementsFromPodSpec`
/// computes them: the sum over containers, then each init container in order — added if it is a native sidecar
/// (`restartPolicy: Always`), else taken where it is larger (a resource no larger than 0 is not taken). Sums keep
/// the format of the first quantity added (`1Gi` + `1Gi` = `2Gi`), and a single value keeps its form.
fn scheduling_requirements(pod: &PodSpec, fx: &mut Fixer) -> ResourceRequirements {
    let mut fold = |pick: fn(&ResourceRequirements) -> &[QuantityMapEntry]| -> Vec<QuantityMapEntry> {
        let mut total: BTreeMap<String, Slot> = BTreeMap::new();
        let mut add = |total: &mut BTreeMap<String, Slot>, key: String, entry: &QuantityMapEntry| {
            if total.entry(key).or_default().add(&go_quantity(entry)).is_err() {
                let raw = entry.value.as_ref().and_then(|q| q.string.as_deref()).unwrap_or_default();
                fx.record("job_spec.scheduling_resource_requirements", "sum_out_of_range", raw.to_vec());
            }
        };
        for c in &pod.containers {
            for (k, entry) in resource_map(c, pick) {
                add(&mut total, k, entry);
            }
        }
        for c in &pod.init_containers {
            let sidecar = c.restart_policy.as_deref() == Some(b"Always".as_slice());
            for (k, entry) in resource_map(c, pick) {
                if sidecar {
                    add(&mut total, k, entry);
                } else {
                    total.entry(k).or_default().max(&go_quantity(entry));
                }
            }
        }
        total
            .into_iter()
            .filter_map(|(k, slot)| {
                slot.get().map(|q| QuantityMapEntry::new(k.into_bytes(), q.to_go_string().into_bytes()))
            })
            .collect()
    };
    ResourceRequirements { requests: fold(|r| &r.requests), limits: fold(|r| &r.limits), claims: Vec::new() }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::message::EventId;
    use crate::proto::armadaevents::{KubernetesMainObject, PodSpecWithAvoidList};
    use crate::proto::k8s::io::api::core::v1::Container;

    fn container(name: &str, reqs: &[(&str, &str)], restart: Option<&str>) -> Container {
        Container {
            name: Some(name.as_bytes().to_vec().into()),
            resources: Some(ResourceRequirements {
                requests: reqs
                    .iter()
                    .map(|(k, v)| QuantityMapEntry::new(k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                    .collect(),
                ..Default::default()
            }),
            restart_policy: restart.map(|r| r.as_bytes().to_vec().into()),
            ..Default::default()
        }
    }

    fn submit(pod: Option<PodSpec>, objects: Vec<KubernetesObject>) -> SubmitJob {
        SubmitJob {
            job_id: Bytes::from_static(b"j1"),
            priority: 3,
            deduplication_id: Bytes::from_static(b"dedup"),
            object_meta: Some(ObjectMeta {
                namespace: Bytes::from_static(b"ns"),
                annotations: vec![StringMapEntry::new(b"armadaproject.io/a".to_vec(), b"1".to_vec())],
                labels: vec![StringMapEntry::new(b"l".to_vec(), b"\xffx".to_vec())],
                ..Default::default()
            }),
            main_object: pod.map(|p| KubernetesMainObject {
                object_meta: None,
                object: Some(kubernetes_main_object::Object::PodSpec(PodSpecWithAvoidList {
                    pod_spec: Some(p.encode_to_vec().into()),
                    node_avoidlist: vec![],
                })),
            }),
            objects,
            ..Default::default()
        }
    }

    /// The spec of submit `s`, its main pod spec decoded as `submit_job` decodes it.
    fn spec(s: &SubmitJob, fx: &mut Fixer) -> api::Job {
        let main_pod = match s.main_object.as_ref().and_then(|o| o.object.as_ref()) {
            Some(kubernetes_main_object::Object::PodSpec(p)) => p.decode_pod_spec().ok().flatten(),
            None => None,
        };
        let input = SpecInput {
            job_id: "j1",
            queue: "q",
            jobset: "js",
            owner: "me",
            namespace: "ns",
            created: 1_500_000,
            submit: s,
            main_pod: main_pod.as_ref(),
        };
        api_job(&input, fx)
    }

    #[test]
    fn one_pod_spec_goes_in_field_5_with_metadata() {
        let pod = PodSpec { containers: vec![container("main", &[("cpu", "1.5")], None)], ..Default::default() };
        let s = submit(Some(pod.clone()), vec![]);
        let mut fx = Fixer::new(EventId { message: 0, event: 0 });
        let job = spec(&s, &mut fx);
        assert_eq!(&job.id[..], b"j1");
        assert_eq!(&job.queue[..], b"q");
        assert_eq!(&job.job_set_id[..], b"js");
        assert_eq!(&job.owner[..], b"me");
        assert_eq!(&job.namespace[..], b"ns");
        assert_eq!(&job.client_id[..], b"dedup");
        assert_eq!(job.priority, 3.0);
        let canonical = PodSpec { containers: vec![container("main", &[("cpu", "1500m")], None)], ..pod };
        assert_eq!(job.pod_spec.as_deref(), Some(canonical.encode_to_vec().as_slice()), "quantities as Go writes them");
        assert!(job.pod_specs.is_empty());
        assert_eq!(&job.annotations[0].key[..], b"armadaproject.io/a", "annotations unfiltered and unstripped");
        assert_eq!(&job.labels[0].value[..], "\u{fffd}x".as_bytes(), "text made valid UTF-8");
        assert_eq!(job.created, Some(Timestamp { seconds: 1, nanos: 500_000_000 }));
        let reqs = job.scheduling_resource_requirements.unwrap();
        assert_eq!(reqs.request(b"cpu"), Some(&b"1500m"[..]));
        assert!(fx.fixes.is_empty());
    }

    #[test]
    fn several_pod_specs_and_extra_objects() {
        let pod = PodSpec::default();
        let extra = KubernetesObject {
            object_meta: Some(ObjectMeta {
                name: Bytes::from_static(b"svc"),
                kubernetes_id: Bytes::from_static(b"uid"),
                ..Default::default()
            }),
            object: Some(kubernetes_object::Object::Service(Bytes::from_static(b"\x0a\x00"))),
        };
        let extra_pod = KubernetesObject {
            object_meta: None,
            object: Some(kubernetes_object::Object::PodSpec(PodSpecWithAvoidList {
                pod_spec: Some(Bytes::from_static(b"")),
                node_avoidlist: vec![],
            })),
        };
        let cm = KubernetesObject {
            object_meta: None,
            object: Some(kubernetes_object::Object::ConfigMap(Bytes::from_static(b"x"))),
        };
        let s = submit(Some(pod), vec![extra, extra_pod, cm]);
        let mut fx = Fixer::new(EventId { message: 0, event: 0 });
        let job = spec(&s, &mut fx);
        assert!(job.pod_spec.is_none());
        assert_eq!(job.pod_specs.len(), 2);
        assert_eq!(job.k8s_service.len(), 1);
        let meta = job.k8s_service[0].metadata.as_ref().unwrap();
        assert_eq!(meta.name.as_deref(), Some(&b"svc"[..]));
        assert_eq!(meta.uid.as_deref(), Some(&b"uid"[..]));
        assert_eq!(fx.fixes.len(), 1);
        assert_eq!(fx.fixes[0].fix, "unsupported_config_map");
    }

    #[test]
    fn no_main_object_still_gives_a_spec() {
        let s = submit(None, vec![]);
        let mut fx = Fixer::new(EventId { message: 0, event: 0 });
        let job = spec(&s, &mut fx);
        assert!(job.pod_spec.is_none() && job.pod_specs.is_empty());
        assert_eq!(&job.namespace[..], b"ns");
    }

    #[test]
    fn init_containers_max_or_add_for_sidecars() {
        let pod = PodSpec {
            containers: vec![container("a", &[("cpu", "1"), ("memory", "1Gi")], None)],
            init_containers: vec![
                container("init", &[("cpu", "4")], None),
                container("sidecar", &[("cpu", "500m"), ("memory", "1Gi")], Some("Always")),
            ],
            ..Default::default()
        };
        let mut fx = Fixer::new(EventId { message: 0, event: 0 });
        let r = scheduling_requirements(&pod, &mut fx);
        assert_eq!(r.request(b"cpu"), Some(&b"4500m"[..]));
        assert_eq!(r.request(b"memory"), Some(&b"2Gi"[..]));
    }
}
