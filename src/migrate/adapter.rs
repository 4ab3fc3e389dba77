//! refinery's async driver traits implemented over a sqlx `PgConnection` (refinery 0.10 ships no sqlx driver).
//!
//! refinery hands `execute` one of three kinds of query lists:
//! - `[CREATE TABLE IF NOT EXISTS <history> …]` before anything else;
//! - `[migration SQL, history INSERT]` for each migration it applies;
//! - `[history INSERT, …]` when it records migrations without running them (`Target::Fake`).
//!
//! A list runs in one transaction, so a migration and its history row commit together. The exception is a
//! migration script marked `-- lookout-ingester: no-transaction` (needed for `CREATE INDEX CONCURRENTLY`, which
//! Postgres refuses inside a transaction block): its steps (separated by `-- lookout-ingester: step` lines) are sent
//! one by one outside any transaction, and the history row is inserted afterwards. A crash in between leaves the
//! migration unrecorded, so every step of such a script must be safe to run again (`IF NOT EXISTS`, guards).

use std::fmt;

use refinery_core::Migration;
use refinery_core::traits::r#async::{AsyncMigrate, AsyncQuery, AsyncTransaction};
use sqlx::{Connection, Executor, PgConnection};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The line that marks a migration script to be run outside a transaction block.
pub const NO_TRANSACTION: &str = "-- lookout-ingester: no-transaction";
/// The line that separates the steps of a no-transaction script.
pub const STEP: &str = "-- lookout-ingester: step";

/// How a migration script is executed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Script {
    /// The whole script in one transaction (together with its history row).
    Transactional,
    /// Each step as its own simple-protocol query, in autocommit mode.
    Steps(Vec<String>),
}

/// Splits a migration script according to its directives, and checks the rules that keep it runnable:
/// `CONCURRENTLY` only in a no-transaction script, and a `CREATE INDEX CONCURRENTLY` step holds that one statement
/// (several statements in one simple query would form an implicit transaction block again).
pub fn parse_script(sql: &str) -> Result<Script, String> {
    let no_tx = sql.lines().any(|l| l.trim() == NO_TRANSACTION);
    if !no_tx {
        if sql.lines().any(|l| l.trim() == STEP) {
            return Err(format!("has `{STEP}` lines but no `{NO_TRANSACTION}` line"));
        }
        if contains_word(&strip_comments(sql), "CONCURRENTLY") {
            return Err(format!(
                "uses CONCURRENTLY, which cannot run in a transaction block: mark it `{NO_TRANSACTION}`"
            ));
        }
        return Ok(Script::Transactional);
    }
    let mut steps = vec![String::new()];
    for line in sql.split_inclusive('\n') {
        if line.trim() == STEP {
            steps.push(String::new());
        } else {
            steps.last_mut().expect("non-empty").push_str(line);
        }
    }
    for (i, step) in steps.iter().enumerate() {
        let code = strip_comments(step);
        if code.trim().is_empty() {
            return Err(format!("step {} is empty", i + 1));
        }
        if contains_word(&code, "CONCURRENTLY") && statement_count(&code) != 1 {
            return Err(format!(
                "step {} uses CONCURRENTLY together with other statements; give it its own step",
                i + 1
            ));
        }
    }
    Ok(Script::Steps(steps))
}

/// The name of the index a `CREATE [UNIQUE] INDEX CONCURRENTLY [IF NOT EXISTS] name …` statement builds.
pub fn concurrent_index_name(step: &str) -> Option<String> {
    let code = strip_comments(step);
    let words: Vec<&str> = code.split_whitespace().collect();
    let upper: Vec<String> = words.iter().map(|w| w.to_ascii_uppercase()).collect();
    let mut i = upper.iter().position(|w| w == "CREATE")?;
    i += 1;
    if upper.get(i).map(String::as_str) == Some("UNIQUE") {
        i += 1;
    }
    if upper.get(i).map(String::as_str) != Some("INDEX") || upper.get(i + 1).map(String::as_str) != Some("CONCURRENTLY")
    {
        return None;
    }
    i += 2;
    if upper.get(i..i + 3).is_some_and(|w| w == ["IF", "NOT", "EXISTS"]) {
        i += 3;
    }
    words.get(i).map(|w| w.to_string())
}

/// Removes `--` line comments and `/* */` block comments (migration scripts hold no string literal containing
/// either, which is all this needs to handle).
pub fn strip_comments(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    loop {
        let line = rest.find("--");
        let block = rest.find("/*");
        match (line, block) {
            (Some(l), b) if b.is_none_or(|b| l < b) => {
                out.push_str(&rest[..l]);
                rest = rest[l..].find('\n').map_or("", |n| &rest[l + n..]);
            }
            (_, Some(b)) => {
                out.push_str(&rest[..b]);
                rest = rest[b..].find("*/").map_or("", |e| &rest[b + e + 2..]);
                out.push(' ');
            }
            (None, None) => {
                out.push_str(rest);
                return out;
            }
            (Some(_), None) => unreachable!("covered by the first arm"),
        }
    }
}

fn contains_word(code: &str, word: &str) -> bool {
    code.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).any(|w| w.eq_ignore_ascii_case(word))
}

fn statement_count(code: &str) -> usize {
    code.split(';').filter(|s| !s.trim().is_empty()).count()
}

/// What can go wrong inside the adapter.
#[derive(Debug)]
pub enum AdapterError {
    Sql { query: String, source: sqlx::Error },
    Script(String),
    History(String),
    InvalidIndex(String),
}

impl fmt::Display for AdapterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdapterError::Sql { query, source } => write!(f, "{source} (while running: {query})"),
            AdapterError::Script(m) => write!(f, "invalid migration script: {m}"),
            AdapterError::History(m) => write!(f, "unreadable migration history: {m}"),
            AdapterError::InvalidIndex(name) => write!(
                f,
                "index {name} is INVALID after CREATE INDEX CONCURRENTLY (the build failed, e.g. a deadlock or a \
                 unique violation); it was left in place: drop it with `DROP INDEX CONCURRENTLY {name}` and rerun"
            ),
        }
    }
}

impl std::error::Error for AdapterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AdapterError::Sql { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn sql_err(query: &str) -> impl FnOnce(sqlx::Error) -> AdapterError + '_ {
    move |source| AdapterError::Sql { query: abbreviate(query), source }
}

/// The first meaningful line of a query, for error messages.
fn abbreviate(query: &str) -> String {
    let code = strip_comments(query);
    let first = code.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    let mut s: String = first.chars().take(160).collect();
    if s.len() < first.len() || code.lines().filter(|l| !l.trim().is_empty()).count() > 1 {
        s.push_str(" …");
    }
    s
}

/// A history-table row as read back: version, name, applied_on (RFC 3339 text), checksum (u64 as text).
pub type HistoryRow = (i32, Option<String>, Option<String>, Option<String>);

/// refinery's driver over one sqlx connection (the one holding the migration advisory lock).
pub struct SqlxMigrate<'c> {
    conn: &'c mut PgConnection,
}

impl<'c> SqlxMigrate<'c> {
    pub fn new(conn: &'c mut PgConnection) -> Self {
        SqlxMigrate { conn }
    }

    async fn run_steps(&mut self, steps: &[String], history_insert: Option<&str>) -> Result<usize, AdapterError> {
        for step in steps {
            if let Err(e) = self.run_step(step).await {
                // A failed step that opened its own BEGIN would leave the session in an aborted transaction.
                let _ = self.conn.execute("ROLLBACK").await;
                return Err(e);
            }
        }
        if let Some(insert) = history_insert {
            self.conn.execute(insert).await.map_err(sql_err(insert))?;
        }
        Ok(steps.len() + usize::from(history_insert.is_some()))
    }

    async fn run_step(&mut self, step: &str) -> Result<(), AdapterError> {
        let index = concurrent_index_name(step);
        if let Some(name) = &index
            && self.index_is_invalid(name).await?
        {
            // Left behind by an interrupted concurrent build; `IF NOT EXISTS` would otherwise keep it forever.
            tracing::warn!(index = %name, "dropping INVALID index left by an interrupted build, then rebuilding it");
            let drop = format!("DROP INDEX CONCURRENTLY IF EXISTS {name}");
            self.conn.execute(drop.as_str()).await.map_err(sql_err(&drop))?;
        }
        // A bare &str goes over the simple query protocol: no transaction is opened around it.
        self.conn.execute(step).await.map_err(sql_err(step))?;
        if let Some(name) = &index
            && self.index_is_invalid(name).await?
        {
            return Err(AdapterError::InvalidIndex(name.clone()));
        }
        Ok(())
    }

    async fn index_is_invalid(&mut self, name: &str) -> Result<bool, AdapterError> {
        let q = "SELECT NOT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass($1)";
        let invalid: Option<bool> =
            sqlx::query_scalar(q).bind(name).fetch_optional(&mut *self.conn).await.map_err(sql_err(q))?;
        Ok(invalid.unwrap_or(false))
    }
}

impl AsyncTransaction for SqlxMigrate<'_> {
    type Error = AdapterError;

    async fn execute<'a, T: Iterator<Item = &'a str> + Send + 'a>(
        &'a mut self,
        queries: T,
    ) -> Result<usize, Self::Error> {
        let queries: Vec<&str> = queries.collect();
        let mut scripts = Vec::new();
        for (i, q) in queries.iter().enumerate() {
            if let Script::Steps(steps) = parse_script(q).map_err(AdapterError::Script)? {
                scripts.push((i, steps));
            }
        }
        if let Some((i, steps)) = scripts.pop() {
            // Only ever [script, history insert]: refinery runs migrations one by one unless grouped, and grouping
            // (a single transaction for everything) is never enabled here.
            if i != 0 || !scripts.is_empty() || queries.len() > 2 {
                return Err(AdapterError::Script(
                    "a no-transaction migration cannot be grouped with other statements".into(),
                ));
            }
            return self.run_steps(&steps, queries.get(1).copied()).await;
        }
        let mut tx = self.conn.begin().await.map_err(sql_err("BEGIN"))?;
        for q in &queries {
            (&mut *tx).execute(*q).await.map_err(sql_err(q))?;
        }
        tx.commit().await.map_err(sql_err("COMMIT"))?;
        Ok(queries.len())
    }
}

impl AsyncQuery<Vec<Migration>> for SqlxMigrate<'_> {
    async fn query<'a>(&'a mut self, query: &'a str) -> Result<Vec<Migration>, Self::Error> {
        let rows: Vec<HistoryRow> = sqlx::query_as(query).fetch_all(&mut *self.conn).await.map_err(sql_err(query))?;
        rows.into_iter()
            .map(|(version, name, applied_on, checksum)| {
                let applied_on = applied_on.unwrap_or_default();
                let applied_on = OffsetDateTime::parse(&applied_on, &Rfc3339).map_err(|e| {
                    AdapterError::History(format!("version {version}: applied_on {applied_on:?} is not RFC 3339: {e}"))
                })?;
                let checksum = checksum.unwrap_or_default();
                let checksum = checksum.parse::<u64>().map_err(|_| {
                    AdapterError::History(format!("version {version}: checksum {checksum:?} is not a u64"))
                })?;
                Ok(Migration::applied(version, name.unwrap_or_default(), applied_on, checksum))
            })
            .collect()
    }
}

impl AsyncMigrate for SqlxMigrate<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactional_by_default() {
        assert_eq!(parse_script("ALTER TABLE job ADD COLUMN x int;").unwrap(), Script::Transactional);
        // The word in a comment does not count.
        assert_eq!(parse_script("-- not CONCURRENTLY\nSELECT 1;").unwrap(), Script::Transactional);
        assert!(parse_script("CREATE INDEX CONCURRENTLY i ON t (c);").unwrap_err().contains("no-transaction"));
    }

    #[test]
    fn steps_split_on_marker_lines() {
        let sql =
            format!("{NO_TRANSACTION}\nBEGIN; SELECT 1; COMMIT;\n{STEP}\nCREATE INDEX CONCURRENTLY i ON t (c);\n");
        let Script::Steps(steps) = parse_script(&sql).unwrap() else { panic!("expected steps") };
        assert_eq!(steps.len(), 2);
        assert!(steps[0].contains("BEGIN; SELECT 1; COMMIT;"));
        assert_eq!(steps[1], "CREATE INDEX CONCURRENTLY i ON t (c);\n");
        let bad = format!("{NO_TRANSACTION}\nSELECT 1; CREATE INDEX CONCURRENTLY i ON t (c);\n");
        assert!(parse_script(&bad).unwrap_err().contains("own step"));
    }

    #[test]
    fn index_name_of_concurrent_build() {
        assert_eq!(
            concurrent_index_name("-- x\nCREATE INDEX CONCURRENTLY IF NOT EXISTS idx_a ON job (a);").as_deref(),
            Some("idx_a")
        );
        assert_eq!(
            concurrent_index_name("create unique index concurrently idx_b on job (b)").as_deref(),
            Some("idx_b")
        );
        assert_eq!(concurrent_index_name("CREATE INDEX idx_c ON job (c)"), None);
        assert_eq!(concurrent_index_name("ALTER TABLE job VALIDATE CONSTRAINT c"), None);
    }

    #[test]
    fn comments_are_stripped() {
        assert_eq!(strip_comments("a -- b\nc /* d\n e */ f"), "a \nc   f");
        assert_eq!(abbreviate("-- c\nALTER TABLE x\n ADD y int;"), "ALTER TABLE x …");
    }
}
