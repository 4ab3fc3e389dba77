//! Resource requests of a job (docs/compatibility.md §2.10): sums over the main pod spec's regular containers of `requests` for
//! `cpu` (millicores, rounded up), `memory` and `ephemeral-storage` (bytes, rounded up) and `nvidia.com/gpu`
//! (units, rounded up). A missing key counts 0; so does a quantity that does not parse, which is recorded rather
//! than failing the message (the reference loses the whole message, docs/compatibility.md §2.2). Sums saturate instead of
//! overflowing.
//!
//! Quantities follow Kubernetes' syntax: a signed decimal number, then a binary suffix (`Ki`…`Ei`), a decimal
//! suffix (`n`, `u`, `m`, none, `k`, `M`, `G`, `T`, `P`, `E`) or an exponent (`e3`, `E-2`). Values are computed
//! exactly (integers, no floating point) before rounding up.

use crate::proto::k8s::io::api::core::v1::PodSpec;

use super::Fixer;

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
            if let Some(raw) = resources.request(name.as_bytes()) {
                match std::str::from_utf8(raw).ok().and_then(|q| ceil_scaled(q, scale)) {
                    Some(v) => *slot = slot.saturating_add(v),
                    None => fx.record(field, "bad_quantity", raw.to_vec()),
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

/// `ceil(quantity × 10^scale)` as an i64 (saturating), or None when the text is not a quantity.
pub fn ceil_scaled(text: &str, scale: u32) -> Option<i64> {
    let q = parse(text)?;
    let exp10 = q.exp10 + scale as i32;
    // value = sign × digits × 10^exp10 × 2^exp2
    let mut numerator: u128 = q.digits;
    let mut denominator: u128 = 1;
    let mut saturated = false;
    let mul = |v: &mut u128, by: u128, saturated: &mut bool| match v.checked_mul(by) {
        Some(x) => *v = x,
        None => *saturated = true,
    };
    for _ in 0..q.exp2 {
        mul(&mut numerator, 2, &mut saturated);
    }
    if exp10 >= 0 {
        for _ in 0..exp10 {
            mul(&mut numerator, 10, &mut saturated);
        }
    } else {
        let mut tiny = false;
        for _ in 0..(-exp10) {
            mul(&mut denominator, 10, &mut tiny);
        }
        if tiny {
            // Smaller than 1 in magnitude: rounds up to 1 if positive, to 0 if negative.
            return Some(if q.digits == 0 || q.negative { 0 } else { 1 });
        }
    }
    if numerator == 0 {
        return Some(0);
    }
    let value: u128 = if saturated {
        u128::MAX
    } else if q.negative {
        numerator / denominator // ceil of a negative value = -(floor of its magnitude)
    } else {
        numerator.div_ceil(denominator)
    };
    let magnitude = i64::try_from(value).unwrap_or(i64::MAX);
    Some(if q.negative { -magnitude } else { magnitude })
}

struct Parsed {
    negative: bool,
    /// All digits of the number, without the decimal point.
    digits: u128,
    exp10: i32,
    exp2: u32,
}

fn parse(text: &str) -> Option<Parsed> {
    let s = text.trim();
    let (negative, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    if number.matches('.').count() > 1 || !number.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    let mut digits: u128 = 0;
    let mut exp10: i32 = -(frac_part.len() as i32);
    for b in int_part.bytes().chain(frac_part.bytes()) {
        match digits.checked_mul(10).and_then(|d| d.checked_add(u128::from(b - b'0'))) {
            Some(d) => digits = d,
            // More significant digits than u128 holds: drop the last ones (they change nothing after rounding
            // to an i64 anyway).
            None => exp10 += 1,
        }
    }
    let (suffix_exp10, exp2) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        other if other.starts_with(['e', 'E']) => {
            let e: i32 = other[1..].parse().ok()?;
            if !(-1000..=1000).contains(&e) {
                return None;
            }
            (e, 0)
        }
        _ => return None,
    };
    Some(Parsed { negative, digits, exp10: exp10 + suffix_exp10, exp2 })
}

#[cfg(test)]
mod tests {
    use super::*;
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
        for bad in ["", "abc", "1..2", "1x", "Gi", "1e", "1e5000", "--1"] {
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
