//! The schema listing of `catalog.sql` (docs/compatibility.md §3), computed over sqlx, and the check an Armada-managed database must
//! pass before its migrations are recorded as applied without running them.
//!
//! The listing compares objects by name, type, nullability, default, index definition, constraint definition and
//! storage options — never by attribute number, because Armada's 031/033 left a dropped column slot in `job_run`.
//! A database passes when it lists every expected line; extra lines (our own columns, a `database_version`
//! sequence, indexes an operator added) are allowed.

use std::collections::BTreeSet;
use std::fmt;

use sqlx::PgConnection;

/// What `catalog.sql` prints for a database built by Armada's migrations 001–035 (spec `lookout-catalog.txt`).
pub const EXPECTED_035: &str = include_str!("catalog-035.txt");

/// The section headers, in order, exactly as `catalog.sql` echoes them.
pub const SECTIONS: [&str; 6] = [
    "# tables and columns: table.column | type | nullable | default",
    "# indexes: table | definition",
    "# constraints: table | type | definition",
    "# storage parameters: relation | options",
    "# column storage overrides (attstorage differs from type default): table.column | storage",
    "# sequences",
];

/// The queries of `catalog.sql`, for the schema the connection resolves unqualified names in (`current_schema()`,
/// which is `public` for Lookout) instead of a hard-coded `public`.
const QUERIES: [&str; 6] = [
    r"select c.table_name||'.'||c.column_name||' | '||
       case when c.data_type='character varying' then 'varchar('||c.character_maximum_length||')'
            when c.data_type='USER-DEFINED' then c.udt_name else c.data_type end
       ||' | '||c.is_nullable||' | '||coalesce(c.column_default,'')
      from information_schema.columns c where c.table_schema=current_schema() order by c.table_name, c.column_name",
    r"select tablename||' | '||regexp_replace(indexdef,'^CREATE (UNIQUE )?INDEX \S+ ON \S+ ','\1')||' | '||indexname
      from pg_indexes where schemaname=current_schema() order by tablename, indexname",
    r"select conrelid::regclass::text||' | '||contype::text||' | '||pg_get_constraintdef(oid)
      from pg_constraint where connamespace=(select oid from pg_namespace where nspname=current_schema()) order by 1",
    r"select relname||' | '||array_to_string(reloptions, ',') from pg_class
      where relnamespace=(select oid from pg_namespace where nspname=current_schema()) and reloptions is not null
      order by 1",
    r"select c.relname||'.'||a.attname||' | '||a.attstorage::text from pg_attribute a join pg_class c on c.oid=a.attrelid
      join pg_type t on t.oid=a.atttypid
      where c.relnamespace=(select oid from pg_namespace where nspname=current_schema()) and c.relkind='r'
        and a.attnum>0 and not a.attisdropped and a.attstorage<>t.typstorage order by 1",
    r"select sequence_name::text from information_schema.sequences where sequence_schema=current_schema() order by 1",
];

/// The listing of the connection's current schema: each section header followed by its lines.
pub async fn listing(conn: &mut PgConnection) -> Result<Vec<String>, sqlx::Error> {
    let mut out = Vec::new();
    for (header, query) in SECTIONS.iter().zip(QUERIES) {
        out.push((*header).to_string());
        let rows: Vec<Option<String>> = sqlx::query_scalar(query).fetch_all(&mut *conn).await?;
        out.extend(rows.into_iter().map(Option::unwrap_or_default));
    }
    Ok(out)
}

/// Expected lines that the actual listing lacks, each with the actual lines that describe the same object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogDiff {
    pub missing: Vec<MissingLine>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingLine {
    pub section: String,
    pub expected: String,
    /// Lines of the same section about the same object (same column, index name, table…), i.e. what is there instead.
    pub found_instead: Vec<String>,
}

impl CatalogDiff {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
    }
}

impl fmt::Display for CatalogDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut section = "";
        for m in &self.missing {
            if m.section != section {
                section = &m.section;
                writeln!(f, "  {section}")?;
            }
            writeln!(f, "    - expected: {}", m.expected)?;
            if m.found_instead.is_empty() {
                writeln!(f, "      found:    (nothing)")?;
            }
            for line in &m.found_instead {
                writeln!(f, "      found:    {line}")?;
            }
        }
        Ok(())
    }
}

/// Splits a listing into (section header, line) pairs, skipping comments and blank lines.
fn sectioned<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<(&'a str, &'a str)> {
    let mut section = "";
    let mut out = Vec::new();
    for line in lines {
        if line.starts_with('#') {
            if SECTIONS.contains(&line) {
                section = line;
            }
        } else if !line.trim().is_empty() {
            out.push((section, line));
        }
    }
    out
}

/// The object a line is about: the index name for indexes, table and constraint type for constraints, the first
/// field otherwise.
fn object_key<'a>(section: &str, line: &'a str) -> String {
    let fields: Vec<&'a str> = line.split(" | ").collect();
    if section == SECTIONS[1] {
        fields.last().copied().unwrap_or(line).to_string()
    } else if section == SECTIONS[2] {
        fields.iter().take(2).copied().collect::<Vec<_>>().join(" | ")
    } else {
        fields[0].to_string()
    }
}

/// Compares a listing against an expected one (in `catalog.sql` output form).
pub fn diff(expected: &str, actual: &[String]) -> CatalogDiff {
    let actual = sectioned(actual.iter().map(String::as_str));
    let present: BTreeSet<(&str, &str)> = actual.iter().copied().collect();
    let missing = sectioned(expected.lines())
        .into_iter()
        .filter(|entry| !present.contains(entry))
        .map(|(section, line)| {
            let key = object_key(section, line);
            MissingLine {
                section: section.to_string(),
                expected: line.to_string(),
                found_instead: actual
                    .iter()
                    .filter(|(s, l)| *s == section && object_key(s, l) == key)
                    .map(|(_, l)| (*l).to_string())
                    .collect(),
            }
        })
        .collect();
    CatalogDiff { missing }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected_lines() -> Vec<String> {
        EXPECTED_035.lines().map(str::to_string).collect()
    }

    #[test]
    fn expected_listing_matches_itself_and_allows_extra_lines() {
        let mut actual = expected_lines();
        assert!(diff(EXPECTED_035, &actual).is_empty());
        actual.push("job.ingester_extra | text | YES | ".into());
        actual.push("database_version".into());
        assert!(diff(EXPECTED_035, &actual).is_empty());
    }

    #[test]
    fn changed_and_missing_objects_are_reported_with_what_is_there() {
        let actual: Vec<String> = expected_lines()
            .into_iter()
            .filter(|l| !l.ends_with("| idx_job_submitted"))
            .map(|l| if l == "job.state | smallint | NO | " { "job.state | integer | NO | ".into() } else { l })
            .collect();
        let d = diff(EXPECTED_035, &actual);
        assert_eq!(d.missing.len(), 2, "{d}");
        assert_eq!(d.missing[0].expected, "job.state | smallint | NO | ");
        assert_eq!(d.missing[0].found_instead, vec!["job.state | integer | NO | ".to_string()]);
        assert!(d.missing[1].expected.ends_with("idx_job_submitted"));
        assert!(d.missing[1].found_instead.is_empty());
        let text = d.to_string();
        assert!(text.contains("expected: job.state | smallint"), "{text}");
        assert!(text.contains("found:    job.state | integer"), "{text}");
    }

    #[test]
    fn the_embedded_listing_is_the_spec_fixture() {
        // Two copies: the library's (used to vet an Armada database) and the test fixture (the spec). Same bytes.
        assert_eq!(EXPECTED_035, include_str!("../../tests/fixtures/lookout-catalog-035.txt"));
        let sections: Vec<&str> = EXPECTED_035.lines().filter(|l| SECTIONS.contains(l)).collect();
        assert_eq!(sections, SECTIONS);
    }
}
