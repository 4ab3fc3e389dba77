//! What the migration tests (`tests/migrations*.rs`) share: the catalog listing in Rust, the history, an
//! Armada-style database, rows that must survive, and a simulated future Armada 036.

use std::collections::BTreeSet;

use lookout_ingester::migrate::{self, ARMADA_MAX_VERSION, HISTORY_TABLE, Migrator, VersionName, adapter};
use refinery::Migration;
use serde_json::Value;
use sqlx::{Executor, PgPool, Row};

use super::db::TestDb;

// ---------------------------------------------------------------------------------------------------------------
// catalog.sql, in Rust: the same SELECTs, section by section.

pub const CATALOG: [(&str, &str); 6] = [
    (
        "# tables and columns: table.column | type | nullable | default",
        r"select c.table_name||'.'||c.column_name||' | '||
       case when c.data_type='character varying' then 'varchar('||c.character_maximum_length||')'
            when c.data_type='USER-DEFINED' then c.udt_name else c.data_type end
       ||' | '||c.is_nullable||' | '||coalesce(c.column_default,'')
from information_schema.columns c where c.table_schema='public' order by c.table_name, c.column_name;",
    ),
    (
        "# indexes: table | definition",
        r"select tablename||' | '||regexp_replace(indexdef,'^CREATE (UNIQUE )?INDEX \S+ ON public\.\S+ ','\1')||' | '||indexname from pg_indexes where schemaname='public' order by tablename, indexname;",
    ),
    (
        "# constraints: table | type | definition",
        r"select conrelid::regclass::text||' | '||contype::text||' | '||pg_get_constraintdef(oid) from pg_constraint where connamespace='public'::regnamespace order by 1;",
    ),
    (
        "# storage parameters: relation | options",
        r"select relname||' | '||array_to_string(reloptions, ',') from pg_class where relnamespace='public'::regnamespace and reloptions is not null order by 1;",
    ),
    (
        "# column storage overrides (attstorage differs from type default): table.column | storage",
        r"select c.relname||'.'||a.attname||' | '||a.attstorage::text from pg_attribute a join pg_class c on c.oid=a.attrelid join pg_type t on t.oid=a.atttypid where c.relnamespace='public'::regnamespace and c.relkind='r' and a.attnum>0 and not a.attisdropped and a.attstorage<>t.typstorage order by 1;",
    ),
    (
        "# sequences",
        r"select sequence_name from information_schema.sequences where sequence_schema='public' order by 1;",
    ),
];

pub const EXPECTED_035: &str = include_str!("../fixtures/lookout-catalog-035.txt");

/// (section, line) pairs of the live database, as catalog.sql prints them.
pub async fn catalog_listing(pool: &PgPool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (section, sql) in CATALOG {
        for row in sqlx::query(sql).fetch_all(pool).await.expect(section) {
            // Some columns are information_schema domains (sql_identifier); their wire format is text.
            let line: Option<String> = row.try_get_unchecked(0).expect("text");
            out.push((section.to_string(), line.unwrap_or_default()));
        }
    }
    out
}

/// (section, line) pairs of the expected listing.
pub fn expected_listing() -> Vec<(String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in EXPECTED_035.lines() {
        if CATALOG.iter().any(|(s, _)| *s == line) {
            section = line.to_string();
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            out.push((section.clone(), line.to_string()));
        }
    }
    out
}

/// Panics with every expected line the database lacks (and, for context, the lines it has in that section that
/// the expected listing does not).
pub async fn assert_catalog_contains_expected(pool: &PgPool) {
    let actual = catalog_listing(pool).await;
    let present: BTreeSet<&(String, String)> = actual.iter().collect();
    let expected = expected_listing();
    assert!(expected.len() > 100, "fixture looks truncated");
    let missing: Vec<&(String, String)> = expected.iter().filter(|e| !present.contains(e)).collect();
    if !missing.is_empty() {
        let expected_set: BTreeSet<&(String, String)> = expected.iter().collect();
        let mut msg = format!("{} expected catalog lines are missing:\n", missing.len());
        for (s, l) in &missing {
            msg.push_str(&format!("  - [{s}] {l}\n"));
        }
        msg.push_str("lines present but not expected (our additions, or the changed versions of the above):\n");
        for (s, l) in actual.iter().filter(|a| !expected_set.contains(a)) {
            msg.push_str(&format!("  + [{s}] {l}\n"));
        }
        panic!("{msg}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// helpers

pub fn embedded() -> Vec<Migration> {
    migrate::embedded_migrations()
}

pub fn all_versions() -> Vec<i32> {
    embedded().iter().map(|m| m.version()).collect()
}

pub fn ours() -> Vec<i32> {
    all_versions().into_iter().filter(|v| *v > ARMADA_MAX_VERSION).collect()
}

pub fn versions(list: &[VersionName]) -> Vec<i32> {
    list.iter().map(|v| v.version).collect()
}

pub async fn history(pool: &PgPool) -> Vec<(i32, String, String)> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL").bind(HISTORY_TABLE).fetch_one(pool).await.unwrap();
    if !exists {
        return Vec::new();
    }
    sqlx::query_as(&format!("SELECT version, name, checksum FROM {HISTORY_TABLE} ORDER BY version"))
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Runs a migration script the way a plain SQL runner would (no history): transactional scripts in one transaction,
/// no-transaction scripts step by step.
pub async fn run_script(pool: &PgPool, sql: &str) {
    match adapter::parse_script(sql).unwrap() {
        adapter::Script::Transactional => {
            pool.execute(format!("BEGIN;\n{sql}\nCOMMIT;").as_str()).await.unwrap();
        }
        adapter::Script::Steps(steps) => {
            for step in steps {
                pool.execute(step.as_str()).await.unwrap();
            }
        }
    }
}

/// An Armada-managed database: V001..=`upto` run directly (as Armada's runner does, without our history), and
/// Armada's `database_version` sequence created and advanced after each file, as Armada's runner does.
pub async fn armada_style(db: &TestDb, upto: i32) {
    db.pool.execute("CREATE SEQUENCE IF NOT EXISTS database_version START WITH 0 MINVALUE 0").await.unwrap();
    for m in embedded().iter().filter(|m| m.version() <= upto) {
        run_script(&db.pool, m.sql().unwrap()).await;
        sqlx::query("SELECT setval('database_version', $1)")
            .bind(i64::from(m.version()))
            .execute(&db.pool)
            .await
            .unwrap();
    }
}

pub async fn sequence_state(pool: &PgPool) -> Option<(i64, bool)> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('database_version') IS NOT NULL").fetch_one(pool).await.unwrap();
    if !exists {
        return None;
    }
    Some(sqlx::query_as("SELECT last_value, is_called FROM database_version").fetch_one(pool).await.unwrap())
}

/// One row in each table the ingester writes (plus queue), with every column of 031 set. Returns nothing: read the
/// rows back with `rows`.
pub async fn insert_rows(pool: &PgPool, with_failure_info: bool) {
    pool.execute(
        r#"INSERT INTO job (job_id, queue, owner, jobset, cpu, memory, ephemeral_storage, gpu, priority, submitted,
                cancelled, state, last_transition_time, last_transition_time_seconds, job_spec, duplicate,
                priority_class, latest_run_id, cancel_reason, namespace, annotations, external_job_uri, cancel_user)
           VALUES ('01hjob0000000000000000000a', 'q1', 'alice', 'set-1', 1500, 2147483648, 1073741824, 1, 7,
                '2026-03-01 10:00:00.123456', '2026-03-01 11:00:00', 5, '2026-03-01 11:00:00', 1772362800,
                '\x0102ff', false, 'armada-default', '01hrun0000000000000000000a', 'user asked', 'ns1',
                '{"a": "1", "team": "x"}', 'https://example/1', 'bob'),
                  ('01hjob0000000000000000000b', 'q1', '', 'set-2', 0, 0, 0, 0, 0,
                '2026-03-02 00:00:00', NULL, 1, '2026-03-02 00:00:00', 1772409600,
                NULL, false, NULL, NULL, NULL, '', '{}', '', NULL);
           INSERT INTO job_run (run_id, job_id, cluster, node, pending, started, finished, job_run_state, error,
                exit_code, leased, debug, pool, ingress_addresses)
           VALUES ('01hrun0000000000000000000a', '01hjob0000000000000000000a', 'c1', 'n1', '2026-03-01 10:01:00',
                '2026-03-01 10:02:00', '2026-03-01 11:00:00', 6, '\x789c0300', 137, '2026-03-01 10:00:30',
                '\x00', 'pool-a', '{"8080": "http://x"}');
           INSERT INTO job_spec (job_id, job_spec) VALUES ('01hjob0000000000000000000a', '\xdeadbeef');
           INSERT INTO job_error (job_id, error) VALUES ('01hjob0000000000000000000a', '\x789c4b0400');
           INSERT INTO queue (name, definition) VALUES ('q1', '\x0a0271');"#,
    )
    .await
    .unwrap();
    if with_failure_info {
        pool.execute(
            r#"UPDATE job_run SET failure_info = '{"exitCode": 137, "categories": ["oom"], "container": "main"}'"#,
        )
        .await
        .unwrap();
    }
}

/// Every row of the tables above as JSON objects (ordered by key).
pub async fn rows(pool: &PgPool) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (table, key) in
        [("job", "job_id"), ("job_run", "run_id"), ("job_spec", "job_id"), ("job_error", "job_id"), ("queue", "name")]
    {
        let vals: Vec<Value> = sqlx::query_scalar(&format!("SELECT to_jsonb(t) FROM {table} t ORDER BY {key}"))
            .fetch_all(pool)
            .await
            .unwrap();
        out.extend(vals.into_iter().map(|v| (table.to_string(), v)));
    }
    out
}

/// `after` equals `before` except for columns that did not exist before, which must be NULL, and `dropped` ones.
pub fn assert_rows_kept(before: &[(String, Value)], after: &[(String, Value)], dropped: &[&str]) {
    assert_eq!(before.len(), after.len(), "row count changed");
    for ((tb, b), (ta, a)) in before.iter().zip(after) {
        assert_eq!(tb, ta);
        let (b, a) = (b.as_object().unwrap(), a.as_object().unwrap());
        for (k, v) in b {
            if dropped.contains(&format!("{tb}.{k}").as_str()) {
                assert!(!a.contains_key(k), "{tb}.{k} should have been dropped");
            } else {
                assert_eq!(a.get(k), Some(v), "{tb}.{k} changed");
            }
        }
        for (k, v) in a {
            if !b.contains_key(k) {
                assert_eq!(v, &Value::Null, "new column {tb}.{k} is not NULL");
            }
        }
    }
}

pub fn future_036() -> Migration {
    // Deliberately not idempotent: running it twice fails, which shows when it was only recorded.
    Migration::unapplied("V036__future_armada_column", "ALTER TABLE job_run ADD COLUMN future_armada_column text;\n")
        .unwrap()
}

pub fn with_036() -> Migrator {
    let mut list = embedded();
    list.push(future_036());
    Migrator::new(list).unwrap()
}
