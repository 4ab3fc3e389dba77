//! Resource requests of a job (docs/compatibility.md §2.10): sums over the main pod spec's regular containers of `requests` for
//! `cpu` (millicores, rounded up), `memory` and `ephemeral-storage` (bytes, rounded up) and `nvidia.com/gpu`
//! (units, rounded up). A missing key counts 0; so does a quantity that does not parse, which is recorded rather
//! than failing the message (the reference loses the whole message, docs/compatibility.md §2.2). Sums saturate instead of
//! overflowing.
//!
//! Quantities are read with Go's grammar and rounding ([`super::quantity`]), exactly, before rounding up. A
//! request without a value counts 0, as Go decodes it.

use crate::proto::k8s::io::api::core::v1::PodSpec;

use super::Fixer;
use super::quantity::Quantity;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Requests {
    pub cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub gpu: i64,
}

/// Sums the requests of the pod spec's `containers` (not init containers, not limits, not pod-level resources).
pub fn requests(pod: &PodSpec, fx: &mut Fixer) -> Requests {
    let mut total = Requests::default();
    for container in &pod.containers {
        let Some(resources) = &container.resources else { continue };
        let mut add = |name: &str, scale: u32, field: &'static str, slot: &mut i64| {
            let entry = resources.requests.iter().rev().find(|e| e.key_bytes() == name.as_bytes());
            // Absent, or present without a value: Go's zero.
            if let Some(raw) = entry.and_then(|e| e.value.as_ref()).and_then(|q| q.string.as_deref()) {
                match Quantity::parse(raw) {
                    Ok(q) => *slot = slot.saturating_add(q.ceil_scaled(scale)),
                    Err(_) => fx.record(field, "bad_quantity", raw.to_vec()),
                }
            }
        };
        add("cpu", 3, "job.cpu", &mut total.cpu);
        add("memory", 0, "job.memory", &mut total.memory);
        add("ephemeral-storage", 0, "job.ephemeral_storage", &mut total.ephemeral_storage);
        add("nvidia.com/gpu", 0, "job.gpu", &mut total.gpu);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ceil_scaled(text: &str, scale: u32) -> Option<i64> {
        Quantity::parse(text.as_bytes()).ok().map(|q| q.ceil_scaled(scale))
    }
    use crate::message::EventId;
    use crate::proto::k8s::io::api::core::v1::{Container, QuantityMapEntry, ResourceRequirements};

    #[test]
    fn cpu_in_millicores_rounded_up() {
        assert_eq!(ceil_scaled("1.5", 3), Some(1500));
        assert_eq!(ceil_scaled("250m", 3), Some(250));
        assert_eq!(ceil_scaled("0.0001", 3), Some(1));
        assert_eq!(ceil_scaled("100u", 3), Some(1));
        assert_eq!(ceil_scaled("2", 3), Some(2000));
        assert_eq!(ceil_scaled("1e3", 3), Some(1_000_000));
        assert_eq!(ceil_scaled("+.5", 3), Some(500));
    }

    #[test]
    fn bytes_rounded_up() {
        assert_eq!(ceil_scaled("1Gi", 0), Some(1_073_741_824));
        assert_eq!(ceil_scaled("1.5Ki", 0), Some(1536));
        assert_eq!(ceil_scaled("128974848", 0), Some(128_974_848));
        assert_eq!(ceil_scaled("129e6", 0), Some(129_000_000));
        assert_eq!(ceil_scaled("123M", 0), Some(123_000_000));
        assert_eq!(ceil_scaled("0.5", 0), Some(1));
        assert_eq!(ceil_scaled("1m", 0), Some(1));
        assert_eq!(ceil_scaled("0", 0), Some(0));
        assert_eq!(ceil_scaled("-1.5", 0), Some(-1));
    }

    #[test]
    fn huge_values_saturate_and_garbage_is_none() {
        assert_eq!(ceil_scaled("100Ei", 0), Some(i64::MAX));
        assert_eq!(ceil_scaled("1e999", 0), Some(i64::MAX));
        assert_eq!(ceil_scaled("1e-999", 0), Some(1));
        // Go's grammar: no whitespace; a suffix alone is 0.
        assert_eq!(ceil_scaled("Gi", 0), Some(0));
        assert_eq!(ceil_scaled("1e5000", 0), Some(i64::MAX));
        for bad in ["", "abc", "1..2", "1x", "1e", "--1", " 1", "1 "] {
            assert_eq!(ceil_scaled(bad, 0), None, "{bad}");
        }
    }

    fn container(reqs: &[(&str, &str)]) -> Container {
        Container {
            resources: Some(ResourceRequirements {
                requests: reqs
                    .iter()
                    .map(|(k, v)| QuantityMapEntry::new(k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn sums_containers_only_and_records_bad_quantities() {
        let pod = PodSpec {
            containers: vec![
                container(&[("cpu", "1.5"), ("memory", "1Gi"), ("nvidia.com/gpu", "1")]),
                container(&[("cpu", "250m"), ("ephemeral-storage", "1k"), ("memory", "lots")]),
            ],
            init_containers: vec![container(&[("cpu", "8")])],
            ..Default::default()
        };
        let mut fx = Fixer::new(EventId { message: 0, event: 0 });
        let r = requests(&pod, &mut fx);
        assert_eq!(r, Requests { cpu: 1750, memory: 1_073_741_824, ephemeral_storage: 1000, gpu: 1 });
        assert_eq!(fx.fixes.len(), 1);
        assert_eq!(fx.fixes[0].fix, "bad_quantity");
        assert_eq!(fx.fixes[0].original, b"lots");
    }
}
