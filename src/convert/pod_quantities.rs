//! Every `resource.Quantity` inside a serialized k8s `PodSpec`, rewritten as Armada writes it: Armada's ingester
//! decodes the pod spec with Go (parsing each quantity) and encodes it again (writing `Quantity.String()`), so
//! Lookout shows `1536Mi` where the submitter wrote `1.5Gi`. A quantity Go cannot parse would make Lookout reject
//! the whole spec; it is replaced by `0`, the value the job's resource columns count for it, and the original is
//! recorded.
//!
//! The pod spec is walked on the wire, along the only paths that lead to a quantity in k8s v0.32.11 (container,
//! init and ephemeral container resources and env `resourceFieldRef.divisor`, pod `overhead` and `resources`,
//! volume `emptyDir.sizeLimit`, downward-API and projected `resourceFieldRef.divisor`, ephemeral volume claim
//! resources); every other byte is copied unchanged. Bytes that do not frame as protobuf along those paths make
//! the pod spec undecodable for Go as well: [`rewrite`] then fails and the caller leaves the pod spec out.

use super::quantity::Quantity;

/// What a field holds, for the fields on a path to a quantity.
#[derive(Clone, Copy)]
enum Node {
    Message(&'static [(u32, Node)]),
    Quantity,
}

const QUANTITY_MAP_ENTRY: Node = Node::Message(&[(2, Node::Quantity)]);
const RESOURCE_REQUIREMENTS: Node = Node::Message(&[(1, QUANTITY_MAP_ENTRY), (2, QUANTITY_MAP_ENTRY)]);
const RESOURCE_FIELD_SELECTOR: Node = Node::Message(&[(3, Node::Quantity)]);
const ENV_VAR: Node = Node::Message(&[(3, Node::Message(&[(2, RESOURCE_FIELD_SELECTOR)]))]);
const CONTAINER: Node = Node::Message(&[(7, ENV_VAR), (8, RESOURCE_REQUIREMENTS)]);
const DOWNWARD_API_FILES: Node = Node::Message(&[(1, Node::Message(&[(3, RESOURCE_FIELD_SELECTOR)]))]);
const VOLUME_SOURCE: Node = Node::Message(&[
    (2, Node::Message(&[(2, Node::Quantity)])), // emptyDir.sizeLimit
    (16, DOWNWARD_API_FILES),                   // downwardAPI
    (26, Node::Message(&[(1, Node::Message(&[(2, DOWNWARD_API_FILES)]))])), // projected.sources[].downwardAPI
    // ephemeral.volumeClaimTemplate.spec.resources
    (29, Node::Message(&[(1, Node::Message(&[(2, Node::Message(&[(2, RESOURCE_REQUIREMENTS)]))]))])),
]);
const POD_SPEC: &[(u32, Node)] = &[
    (1, Node::Message(&[(2, VOLUME_SOURCE)])), // volumes
    (2, CONTAINER),                            // containers
    (20, CONTAINER),                           // initContainers
    (34, Node::Message(&[(1, CONTAINER)])),    // ephemeralContainers[].ephemeralContainerCommon
    (32, QUANTITY_MAP_ENTRY),                  // overhead
    (40, RESOURCE_REQUIREMENTS),               // resources
];

/// The pod spec's bytes do not frame as protobuf along a path to a quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// A quantity that Go cannot parse, as found.
pub type BadQuantity = Vec<u8>;

/// The pod spec with every quantity as Go writes it (`None` when that changes nothing), and the quantities that
/// were replaced by `0`.
pub fn rewrite(pod_spec: &[u8]) -> Result<(Option<Vec<u8>>, Vec<BadQuantity>), Malformed> {
    let mut bad = Vec::new();
    let out = message(pod_spec, POD_SPEC, &mut bad)?;
    Ok(((out != pod_spec).then_some(out), bad))
}

/// The text a quantity's wire message stands for: its last `string` (field 1), or None when absent (Go's zero).
/// Err when Go's decoder would fail on it.
pub fn quantity_text(msg: &[u8]) -> Result<Option<&[u8]>, Malformed> {
    let mut text = None;
    let mut r = Reader { buf: msg, pos: 0 };
    while let Some((field, wire, _)) = r.key()? {
        match (field, wire) {
            (1, 2) => text = Some(r.len_delimited()?),
            (1, _) => return Err(Malformed),
            _ => r.skip(wire, field)?,
        }
    }
    Ok(text)
}

fn message(buf: &[u8], fields: &[(u32, Node)], bad: &mut Vec<BadQuantity>) -> Result<Vec<u8>, Malformed> {
    let mut out = Vec::with_capacity(buf.len());
    let mut r = Reader { buf, pos: 0 };
    while let Some((field, wire, start)) = r.key()? {
        let Some(node) = fields.iter().find(|(n, _)| *n == field).map(|(_, node)| *node) else {
            r.skip(wire, field)?;
            out.extend_from_slice(&buf[start..r.pos]);
            continue;
        };
        if wire != 2 {
            return Err(Malformed);
        }
        let inner = r.len_delimited()?;
        let rewritten = match node {
            Node::Message(sub) => message(inner, sub, bad)?,
            Node::Quantity => quantity(inner, bad),
        };
        put_varint(&mut out, u64::from(field) << 3 | 2);
        put_varint(&mut out, rewritten.len() as u64);
        out.extend_from_slice(&rewritten);
    }
    Ok(out)
}

/// A Quantity message as Go writes it back: one `string`, `String()` of the parsed value; `0` for a value Go
/// rejects (recorded).
fn quantity(msg: &[u8], bad: &mut Vec<BadQuantity>) -> Vec<u8> {
    let text = match quantity_text(msg) {
        Ok(None) => "0".to_string(),
        Ok(Some(raw)) => match Quantity::parse(raw) {
            Ok(q) => q.to_go_string(),
            Err(_) => {
                bad.push(raw.to_vec());
                "0".to_string()
            }
        },
        Err(Malformed) => {
            bad.push(msg.to_vec());
            "0".to_string()
        }
    };
    let mut out = Vec::with_capacity(text.len() + 2);
    put_varint(&mut out, 1 << 3 | 2);
    put_varint(&mut out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or(Malformed)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(Malformed)
    }

    /// The next field's number and wire type, and where its key starts; None at the end.
    fn key(&mut self) -> Result<Option<(u32, u8, usize)>, Malformed> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let start = self.pos;
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).map_err(|_| Malformed)?;
        if field == 0 {
            return Err(Malformed);
        }
        Ok(Some((field, (key & 7) as u8, start)))
    }

    fn len_delimited(&mut self) -> Result<&'a [u8], Malformed> {
        let len = usize::try_from(self.varint()?).map_err(|_| Malformed)?;
        let end = self.pos.checked_add(len).filter(|&e| e <= self.buf.len()).ok_or(Malformed)?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn advance(&mut self, n: usize) -> Result<(), Malformed> {
        self.pos = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or(Malformed)?;
        Ok(())
    }

    /// Skips a field's value (groups included, as Go's decoder does for unknown fields).
    fn skip(&mut self, wire: u8, field: u32) -> Result<(), Malformed> {
        match wire {
            0 => self.varint().map(drop),
            1 => self.advance(8),
            2 => self.len_delimited().map(drop),
            5 => self.advance(4),
            3 => loop {
                let (inner, inner_wire, _) = self.key()?.ok_or(Malformed)?;
                if inner_wire == 4 {
                    return if inner == field { Ok(()) } else { Err(Malformed) };
                }
                self.skip(inner_wire, inner)?;
            },
            _ => Err(Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::proto::k8s::io::api::core::v1::{Container, PodSpec, QuantityMapEntry, ResourceRequirements};

    fn len_field(field: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, u64::from(field) << 3 | 2);
        put_varint(&mut out, payload.len() as u64);
        out.extend_from_slice(payload);
        out
    }

    fn quantity_msg(text: &str) -> Vec<u8> {
        len_field(1, text.as_bytes())
    }

    #[test]
    fn container_resources_are_canonical_and_bad_ones_zero() {
        let pod = PodSpec {
            containers: vec![Container {
                name: Some(b"main".to_vec().into()),
                resources: Some(ResourceRequirements {
                    requests: vec![
                        QuantityMapEntry::new(b"cpu".to_vec(), b"1.5".to_vec()),
                        QuantityMapEntry::new(b"memory".to_vec(), b"1024Mi".to_vec()),
                    ],
                    limits: vec![QuantityMapEntry::new(b"memory".to_vec(), b"lots".to_vec())],
                    claims: vec![],
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let (out, bad) = rewrite(&pod.encode_to_vec()).unwrap();
        let back = PodSpec::decode(out.unwrap().as_slice()).unwrap();
        let r = back.containers[0].resources.as_ref().unwrap();
        assert_eq!(r.request(b"cpu"), Some(&b"1500m"[..]));
        assert_eq!(r.request(b"memory"), Some(&b"1Gi"[..]));
        assert_eq!(r.limit(b"memory"), Some(&b"0"[..]));
        assert_eq!(bad, vec![b"lots".to_vec()]);
        assert_eq!(back.containers[0].name.as_deref(), Some(&b"main"[..]));
    }

    #[test]
    fn canonical_input_is_left_alone() {
        let mut raw = len_field(
            2,
            &len_field(8, &len_field(2, &[len_field(1, b"cpu"), len_field(2, &quantity_msg("2"))].concat())),
        );
        raw.extend_from_slice(&[0x18, 0x05]); // an unknown varint field (restartPolicy is a string; any field will do)
        assert_eq!(rewrite(&raw).unwrap(), (None, vec![]));
    }

    #[test]
    fn every_path_to_a_quantity_is_rewritten() {
        let divisor = len_field(3, &quantity_msg("1000m"));
        let env = len_field(7, &len_field(3, &len_field(2, &divisor)));
        let empty_dir = len_field(2, &len_field(2, &quantity_msg("2048Ki")));
        let downward = len_field(16, &len_field(1, &len_field(3, &divisor)));
        let projected = len_field(26, &len_field(1, &len_field(2, &len_field(1, &len_field(3, &divisor)))));
        let claim = len_field(
            29,
            &len_field(
                1,
                &len_field(
                    2,
                    &len_field(
                        2,
                        &len_field(2, &[len_field(1, b"storage"), len_field(2, &quantity_msg("1e3"))].concat()),
                    ),
                ),
            ),
        );
        let pod = [
            len_field(1, &len_field(2, &[empty_dir, downward, projected, claim].concat())),
            len_field(2, &env),
            len_field(34, &len_field(1, &env)),
            len_field(32, &[len_field(1, b"cpu"), len_field(2, &quantity_msg("0.1"))].concat()),
        ]
        .concat();
        let (out, bad) = rewrite(&pod).unwrap();
        let out = out.unwrap();
        assert!(bad.is_empty());
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text.matches("\n\x011").count(), 4, "four divisors of 1000m became 1: {text:?}");
        assert!(text.contains("\n\x032Mi") && text.contains("\n\x031e3") && text.contains("\n\x04100m"), "{text:?}");
    }

    #[test]
    fn broken_framing_is_malformed() {
        assert_eq!(rewrite(&[0x12, 0x05, 0x01]), Err(Malformed));
        assert_eq!(rewrite(&[0x10, 0x01]), Err(Malformed), "containers with a varint wire type");
    }
}
