//! `SubmitJob.objectMeta.annotations` → `job.annotations` (docs/compatibility.md §5.7): drop blocklisted keys (compared
//! lower-cased, before the prefix is stripped), strip the user prefix, remove NUL, cut keys and values to 1024
//! characters. When two source keys land on the same stored key, the prefixed one wins, whatever the order
//! (the reference picks at random). The result is a JSON object, `{}` when empty, never NULL.

use std::collections::BTreeMap;

use crate::proto::armadaevents::StringMapEntry;

use super::{Converter, Fixer, limits};

pub fn stored(entries: &[StringMapEntry], conv: &Converter, fx: &mut Fixer) -> String {
    // (stored key) → (came from a prefixed key, value)
    let mut out: BTreeMap<String, (bool, String)> = BTreeMap::new();
    let prefix = conv.annotation_prefix.as_deref().unwrap_or("");
    for entry in entries {
        let raw_key = crate::proto::text(&entry.key);
        if conv.annotation_blocklist.iter().any(|b| *b == raw_key.to_lowercase()) {
            continue;
        }
        let (prefixed, key_bytes) = match (!prefix.is_empty()).then(|| entry.key.strip_prefix(prefix.as_bytes())) {
            Some(Some(rest)) => (true, rest),
            _ => (false, &entry.key[..]),
        };
        let key = fx.fit(key_bytes, Some(limits::ANNOTATION), "job.annotations");
        let value = fx.fit(&entry.value, Some(limits::ANNOTATION), "job.annotations");
        match out.get(&key) {
            Some((true, _)) if !prefixed => {}
            _ => {
                out.insert(key, (prefixed, value));
            }
        }
    }
    let map: serde_json::Map<String, serde_json::Value> =
        out.into_iter().map(|(k, (_, v))| (k, serde_json::Value::String(v))).collect();
    serde_json::Value::Object(map).to_string()
}

/// The raw value of an annotation (unfiltered, unstripped), e.g. the external-URI fallback.
pub fn raw<'a>(entries: &'a [StringMapEntry], key: &str) -> Option<&'a [u8]> {
    entries.iter().rev().find(|e| &e.key[..] == key.as_bytes()).map(|e| &e.value[..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::EventId;

    fn entry(k: &str, v: &str) -> StringMapEntry {
        StringMapEntry::new(k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    fn conv(blocklist: &[&str]) -> Converter {
        Converter { annotation_blocklist: blocklist.iter().map(|s| s.to_lowercase()).collect(), ..Default::default() }
    }

    #[test]
    fn strips_prefix_keeps_others_and_blocks_case_insensitively() {
        let mut fx = Fixer::new(EventId { message: 0, event: 0 });
        let entries = [entry("armadaproject.io/team", "a"), entry("other", "b"), entry("Armadaproject.io/Secret", "c")];
        let json = stored(&entries, &conv(&["armadaproject.io/secret"]), &mut fx);
        assert_eq!(json, r#"{"other":"b","team":"a"}"#);
    }

    #[test]
    fn prefixed_key_wins_collisions_in_any_order() {
        let mut fx = Fixer::new(EventId { message: 0, event: 0 });
        let a = stored(&[entry("armadaproject.io/x", "p"), entry("x", "plain")], &conv(&[]), &mut fx);
        let b = stored(&[entry("x", "plain"), entry("armadaproject.io/x", "p")], &conv(&[]), &mut fx);
        assert_eq!(a, r#"{"x":"p"}"#);
        assert_eq!(a, b);
    }

    #[test]
    fn removes_nul_and_truncates_and_empty_is_object() {
        let mut fx = Fixer::new(EventId { message: 0, event: 0 });
        let long = "v".repeat(2000);
        let json = stored(&[entry("k\0", &long)], &conv(&[]), &mut fx);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["k"].as_str().unwrap().len(), 1024);
        assert_eq!(fx.fixes.len(), 2);
        assert_eq!(stored(&[], &conv(&[]), &mut fx), "{}");
    }
}
