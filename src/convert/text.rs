//! Fitting values to the schema: every text that goes into a column passes through [`Fixer::fit`].
//!
//! Invalid UTF-8 is replaced, U+0000 is removed (Postgres text and jsonb reject it, docs/compatibility.md D8), and a value longer
//! than its column is cut at a character boundary to the column's limit in characters (D7). Each change is
//! recorded, with the original bytes, as a [`Sanitized`] value, so nothing is lost silently.

use crate::changes::Sanitized;
use crate::message::EventId;
use crate::proto::text_checked;

/// Collects the fixes made while converting one event.
pub struct Fixer {
    pub id: EventId,
    pub job_id: Option<String>,
    pub run_id: Option<String>,
    pub fixes: Vec<Sanitized>,
}

impl Fixer {
    pub fn new(id: EventId) -> Self {
        Fixer { id, job_id: None, run_id: None, fixes: Vec::new() }
    }

    /// The text of `bytes`, repaired and cut to `limit` characters (None: unlimited).
    pub fn fit(&mut self, bytes: &[u8], limit: Option<usize>, field: &'static str) -> String {
        let (text, invalid) = text_checked(bytes);
        let mut value = text.into_owned();
        let mut fixes: Vec<&'static str> = Vec::new();
        if invalid {
            fixes.push("invalid_utf8");
        }
        if value.contains('\0') {
            value.retain(|c| c != '\0');
            fixes.push("nul_removed");
        }
        if let Some(limit) = limit
            && let Some((cut, _)) = value.char_indices().nth(limit)
        {
            value.truncate(cut);
            fixes.push("truncated");
        }
        for fix in fixes {
            self.record(field, fix, bytes.to_vec());
        }
        value
    }

    /// As [`Fixer::fit`], but an empty result is `None` ("no value", docs/compatibility.md D9).
    pub fn fit_opt(&mut self, bytes: &[u8], limit: Option<usize>, field: &'static str) -> Option<String> {
        Some(self.fit(bytes, limit, field)).filter(|s| !s.is_empty())
    }

    /// Records a fix that is not about text (e.g. an unparsable quantity counted as 0).
    pub fn record(&mut self, field: &'static str, fix: &'static str, original: Vec<u8>) {
        self.fixes.push(Sanitized {
            source: self.id,
            job_id: self.job_id.clone(),
            run_id: self.run_id.clone(),
            field,
            fix,
            original,
        });
    }
}

/// A job or run id as it must be stored: non-empty, valid UTF-8, no NUL, at most `limit` characters. Ids are never
/// truncated (two different ids could become one), so a bad id is an error and the event is quarantined.
pub fn id(bytes: &[u8], limit: usize, what: &str) -> Result<String, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| format!("{what} is not valid UTF-8"))?;
    if text.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if text.contains('\0') {
        return Err(format!("{what} contains a NUL character"));
    }
    let chars = text.chars().count();
    if chars > limit {
        return Err(format!("{what} has {chars} characters; the column holds {limit}"));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_by_characters_without_splitting_utf8() {
        let mut f = Fixer::new(EventId { message: 0, event: 0 });
        let s = "é".repeat(70);
        let out = f.fit(s.as_bytes(), Some(63), "job_run.failure_category");
        assert_eq!(out.chars().count(), 63);
        assert_eq!(out.len(), 126);
        assert_eq!(f.fixes.len(), 1);
        assert_eq!(f.fixes[0].fix, "truncated");
        assert_eq!(f.fixes[0].original, s.as_bytes());
    }

    #[test]
    fn removes_nul_and_repairs_utf8_and_says_so() {
        let mut f = Fixer::new(EventId { message: 0, event: 0 });
        let out = f.fit(b"a\0b\xffc", None, "job.namespace");
        assert_eq!(out, "ab\u{fffd}c");
        let fixes: Vec<_> = f.fixes.iter().map(|x| x.fix).collect();
        assert_eq!(fixes, vec!["invalid_utf8", "nul_removed"]);
    }

    #[test]
    fn clean_values_record_nothing_and_empty_is_none() {
        let mut f = Fixer::new(EventId { message: 0, event: 0 });
        assert_eq!(f.fit(b"fine", Some(4), "x"), "fine");
        assert_eq!(f.fit_opt(b"", Some(4), "x"), None);
        assert_eq!(f.fit_opt(b"\0", Some(4), "x"), None);
        assert_eq!(f.fixes.len(), 1);
    }

    #[test]
    fn ids_are_validated_not_truncated() {
        assert_eq!(id(b"01h", 32, "job_id").unwrap(), "01h");
        assert!(id(b"", 32, "job_id").is_err());
        assert!(id(&[b'a'; 33], 32, "job_id").unwrap_err().contains("33 characters"));
        assert!(id(b"a\0", 32, "job_id").is_err());
        assert!(id(b"\xff", 32, "job_id").is_err());
    }
}
