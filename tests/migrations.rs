//! Migrations against a real PostgreSQL (env `DATABASE_URL`, see tests/common): each test on a fresh database.
//!
//! 1. fresh database → every line of Armada's 035 catalog listing (tests/fixtures/lookout-catalog-035.txt)
//! 2. `migrate status` before and after
//! 3. rows survive 031 → latest (failure_info dropped, new columns NULL)
//! 4. adoption of an Armada-managed database (at 35; below 35 refused; schema mismatch refused; newer warns)
//! 5. divergence (changed checksum, changed file, unknown version)
//! 6. `ensure_current` on a database that is behind
//! 7. two concurrent `migrate`s
//!
//! Plus: Armada's future 036 arriving after our V1001+, and recovery from an INVALID concurrent index.

mod common;

use std::collections::BTreeSet;

use common::TestDb;
use lookout_ingester::migrate::{
    self, ARMADA_MAX_VERSION, ARMADA_SCHEMA_VERSION, HISTORY_TABLE, Health, MigrateError, MigrationState, Migrator,
    VersionName, adapter, catalog,
};
use refinery::Migration;
use serde_json::Value;
use sqlx::{Executor, PgPool, Row};

// ---------------------------------------------------------------------------------------------------------------
// catalog.sql, in Rust: the same SELECTs, section by section.

const CATALOG: [(&str, &str); 6] = [
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

const EXPECTED_035: &str = include_str!("fixtures/lookout-catalog-035.txt");

/// (section, line) pairs of the live database, as catalog.sql prints them.
async fn catalog_listing(pool: &PgPool) -> Vec<(String, String)> {
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
fn expected_listing() -> Vec<(String, String)> {
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
async fn assert_catalog_contains_expected(pool: &PgPool) {
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

fn embedded() -> Vec<Migration> {
    migrate::embedded_migrations()
}

fn all_versions() -> Vec<i32> {
    embedded().iter().map(|m| m.version()).collect()
}

fn ours() -> Vec<i32> {
    all_versions().into_iter().filter(|v| *v > ARMADA_MAX_VERSION).collect()
}

fn versions(list: &[VersionName]) -> Vec<i32> {
    list.iter().map(|v| v.version).collect()
}

async fn history(pool: &PgPool) -> Vec<(i32, String, String)> {
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
async fn run_script(pool: &PgPool, sql: &str) {
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
async fn armada_style(db: &TestDb, upto: i32) {
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

async fn sequence_state(pool: &PgPool) -> Option<(i64, bool)> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('database_version') IS NOT NULL").fetch_one(pool).await.unwrap();
    if !exists {
        return None;
    }
    Some(sqlx::query_as("SELECT last_value, is_called FROM database_version").fetch_one(pool).await.unwrap())
}

/// One row in each table the ingester writes (plus queue), with every column of 031 set. Returns nothing: read the
/// rows back with `rows`.
async fn insert_rows(pool: &PgPool, with_failure_info: bool) {
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
async fn rows(pool: &PgPool) -> Vec<(String, Value)> {
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
fn assert_rows_kept(before: &[(String, Value)], after: &[(String, Value)], dropped: &[&str]) {
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

fn future_036() -> Migration {
    // Deliberately not idempotent: running it twice fails, which shows when it was only recorded.
    Migration::unapplied("V036__future_armada_column", "ALTER TABLE job_run ADD COLUMN future_armada_column text;\n")
        .unwrap()
}

fn with_036() -> Migrator {
    let mut list = embedded();
    list.push(future_036());
    Migrator::new(list).unwrap()
}

// ---------------------------------------------------------------------------------------------------------------
// 1. schema

#[tokio::test]
async fn fresh_database_has_every_line_of_armadas_catalog() {
    let db = TestDb::new().await;
    let report = migrate::migrate(&db.pool).await.unwrap();
    assert_eq!(versions(&report.applied), all_versions());
    assert!(report.recorded.is_empty() && report.adopted_from.is_none());
    assert_catalog_contains_expected(&db.pool).await;

    // The library's own listing (used to vet Armada databases) agrees with the verbatim catalog.sql queries.
    let mut conn = db.pool.acquire().await.unwrap();
    let lib: Vec<String> = catalog::listing(&mut conn).await.unwrap();
    let lib: Vec<String> = lib.into_iter().filter(|l| !l.starts_with('#')).collect();
    let verbatim: Vec<String> = catalog_listing(&db.pool).await.into_iter().map(|(_, l)| l).collect();
    assert_eq!(lib, verbatim);
}

#[tokio::test]
async fn concurrent_indexes_are_valid_and_migrate_is_idempotent() {
    let db = TestDb::migrated().await;
    let invalid: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE NOT i.indisvalid",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(invalid.is_empty(), "invalid indexes: {invalid:?}");
    let again = migrate::migrate(&db.pool).await.unwrap();
    assert!(again.applied.is_empty() && again.recorded.is_empty(), "{again:?}");
    assert_eq!(again.to_string(), "nothing to apply: the database is current");
}

// ---------------------------------------------------------------------------------------------------------------
// 2. status

#[tokio::test]
async fn status_lists_all_pending_then_all_applied() {
    let db = TestDb::new().await;
    let before = migrate::status(&db.pool).await.unwrap();
    assert!(!before.history_table_exists);
    assert_eq!(before.health(), Health::Behind);
    assert_eq!(before.migrations.iter().map(|m| m.version).collect::<Vec<_>>(), all_versions());
    for (m, e) in before.migrations.iter().zip(embedded()) {
        assert_eq!(m.state, MigrationState::Pending, "{}", m.version);
        assert_eq!((m.name.as_str(), m.checksum), (e.name(), Some(e.checksum())));
        assert_eq!(m.applied_on, None);
    }
    // Read-only: status created nothing.
    assert!(history(&db.pool).await.is_empty());
    let text = before.to_string();
    assert!(text.contains("V001     initial_schema"), "{text}");
    assert!(text.contains("status: behind\ndatabase is behind:"), "{text}");

    migrate::migrate(&db.pool).await.unwrap();
    let after = migrate::status(&db.pool).await.unwrap();
    assert_eq!(after.health(), Health::Current);
    assert!(after.history_table_exists);
    assert_eq!(after.migrations.len(), embedded().len());
    for m in &after.migrations {
        assert_eq!(m.state, MigrationState::Applied, "{}", m.version);
        let on = m.applied_on.as_deref().expect("applied_on");
        assert!(on.starts_with("20"), "{on}");
    }
    assert!(after.to_string().ends_with("status: current"));
    migrate::ensure_current(&db.pool).await.unwrap();
}

// ---------------------------------------------------------------------------------------------------------------
// 3. data

#[tokio::test]
async fn rows_survive_from_031_to_latest() {
    let db = TestDb::new().await;
    let report = Migrator::embedded().migrate_to(&db.pool, 31).await.unwrap();
    assert_eq!(versions(&report.applied), (1..=31).collect::<Vec<_>>());
    insert_rows(&db.pool, true).await;
    let before = rows(&db.pool).await;
    assert!(before.iter().any(|(t, v)| t == "job_run" && v["failure_info"]["exitCode"] == 137));

    let report = migrate::migrate(&db.pool).await.unwrap();
    assert_eq!(versions(&report.applied), all_versions().into_iter().filter(|v| *v > 31).collect::<Vec<_>>());
    let after = rows(&db.pool).await;
    assert_rows_kept(&before, &after, &["job_run.failure_info"]);
    let run = &after.iter().find(|(t, _)| t == "job_run").unwrap().1;
    for col in ["failure_category", "failure_subcategory", "scheduler_termination_reason"] {
        assert_eq!(run.get(col), Some(&Value::Null), "{col}");
    }
    migrate::ensure_current(&db.pool).await.unwrap();
}

// ---------------------------------------------------------------------------------------------------------------
// 4. adoption

#[tokio::test]
async fn armada_database_at_35_is_adopted_without_rerunning_armadas_migrations() {
    let db = TestDb::new().await;
    armada_style(&db, 35).await;
    insert_rows(&db.pool, false).await;
    let before = rows(&db.pool).await;
    let seq_before = sequence_state(&db.pool).await;
    assert_eq!(seq_before, Some((35, true)));

    // Before: status says it would adopt, ensure_current says what to run.
    let status = migrate::status(&db.pool).await.unwrap();
    assert_eq!(status.adopt, Some(35));
    assert_eq!(status.health(), Health::Behind);
    let err = migrate::ensure_current(&db.pool).await.unwrap_err();
    assert!(matches!(err, MigrateError::NotAdopted { armada_version: 35, .. }), "{err}");
    assert!(err.to_string().contains("run `lookout-ingester migrate`"), "{err}");

    let report = migrate::migrate(&db.pool).await.unwrap();
    assert_eq!(report.adopted_from, Some(35));
    assert_eq!(versions(&report.recorded), (1..=35).collect::<Vec<_>>());
    assert_eq!(versions(&report.applied), ours(), "only our own migrations may run");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    // History: every version once, with this binary's names and checksums.
    let hist = history(&db.pool).await;
    let expected: Vec<(i32, String, String)> =
        embedded().iter().map(|m| (m.version(), m.name().to_string(), m.checksum().to_string())).collect();
    assert_eq!(hist, expected);
    // Rows intact; Armada's sequence untouched; schema still Armada's.
    assert_rows_kept(&before, &rows(&db.pool).await, &[]);
    assert_eq!(sequence_state(&db.pool).await, seq_before);
    assert_catalog_contains_expected(&db.pool).await;
    migrate::ensure_current(&db.pool).await.unwrap();
    assert!(migrate::migrate(&db.pool).await.unwrap().applied.is_empty());
}

#[tokio::test]
async fn armada_database_below_35_is_refused() {
    let db = TestDb::new().await;
    armada_style(&db, 30).await;
    let err = migrate::migrate(&db.pool).await.unwrap_err();
    assert!(matches!(err, MigrateError::ArmadaBehind { armada_version: 30, .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("database_version is 30"), "{msg}");
    assert!(msg.contains("V031…V035"), "{msg}");
    assert!(msg.contains("`lookout --migrateDatabase`"), "{msg}");
    assert!(history(&db.pool).await.is_empty(), "nothing may be recorded");
    assert_eq!(sequence_state(&db.pool).await, Some((30, true)));
    let err = migrate::ensure_current(&db.pool).await.unwrap_err();
    assert!(matches!(err, MigrateError::ArmadaBehind { .. }), "{err}");
}

#[tokio::test]
async fn armada_database_with_a_different_schema_is_refused_with_the_differences() {
    let db = TestDb::new().await;
    armada_style(&db, 35).await;
    db.pool
        .execute(
            "ALTER TABLE job_run ALTER COLUMN node TYPE text;
             ALTER TABLE job ALTER COLUMN queue DROP NOT NULL;
             DROP INDEX idx_job_submitted;
             ALTER INDEX idx_job_state SET (fillfactor = 90);",
        )
        .await
        .unwrap();
    let err = migrate::migrate(&db.pool).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, MigrateError::SchemaMismatch { armada_version: 35, .. }), "{msg}");
    for needle in [
        "expected: job_run.node | varchar(512) | YES | ",
        "found:    job_run.node | text | YES | ",
        "expected: job.queue | varchar(512) | NO | ",
        "found:    job.queue | varchar(512) | YES | ",
        "expected: job | USING btree (submitted DESC) | idx_job_submitted",
        "expected: idx_job_state | fillfactor=80",
        "found:    idx_job_state | fillfactor=90",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
    }
    let MigrateError::SchemaMismatch { diff, .. } = err else { unreachable!() };
    // Exactly these objects: node column, queue column, the index, and two lines of idx_job_state (the index
    // definition carries its options too).
    assert_eq!(diff.missing.len(), 5, "{diff}");
    assert!(history(&db.pool).await.is_empty(), "nothing may be recorded");
    assert_eq!(sequence_state(&db.pool).await, Some((35, true)));
}

#[tokio::test]
async fn armada_database_newer_than_this_binary_is_adopted_with_a_warning() {
    let db = TestDb::new().await;
    armada_style(&db, 35).await;
    sqlx::query("SELECT setval('database_version', 36)").execute(&db.pool).await.unwrap();
    let report = migrate::migrate(&db.pool).await.unwrap();
    assert_eq!(report.adopted_from, Some(36));
    assert_eq!(versions(&report.recorded), (1..=35).collect::<Vec<_>>());
    assert_eq!(versions(&report.applied), ours());
    assert!(report.warnings.iter().any(|w| w.contains("newer")), "{:?}", report.warnings);
    assert_eq!(sequence_state(&db.pool).await, Some((36, true)));
    migrate::ensure_current(&db.pool).await.unwrap();
}

#[tokio::test]
async fn tables_without_any_version_record_are_refused() {
    let db = TestDb::new().await;
    run_script(&db.pool, embedded()[0].sql().unwrap()).await;
    let err = migrate::migrate(&db.pool).await.unwrap_err();
    assert!(matches!(err, MigrateError::Unmanaged), "{err}");
}

// ---------------------------------------------------------------------------------------------------------------
// Armada's future 036 (simulated with a test-only migration list)

#[tokio::test]
async fn a_later_armada_migration_is_applied_after_our_own_ones() {
    let db = TestDb::migrated().await;
    let next = with_036();
    let status = next.status(&db.pool).await.unwrap();
    assert_eq!(status.health(), Health::Behind);
    assert_eq!(versions(&status.pending()), [36]);
    let err = next.ensure_current(&db.pool).await.unwrap_err();
    assert!(err.to_string().contains("1 pending migration (V036)"), "{err}");

    let report = next.migrate(&db.pool).await.unwrap();
    assert_eq!(versions(&report.applied), [36]);
    next.ensure_current(&db.pool).await.unwrap();
    let col: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_name = 'job_run' AND column_name = 'future_armada_column')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(col);

    // The previous binary now sees a version it does not know.
    let err = migrate::ensure_current(&db.pool).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("V036") && msg.contains("newer lookout-ingester"), "{msg}");
}

#[tokio::test]
async fn on_an_armada_tracked_database_armadas_036_is_left_to_armadas_runner() {
    let db = TestDb::new().await;
    armada_style(&db, 35).await;
    migrate::migrate(&db.pool).await.unwrap();
    let next = with_036();

    // Armada's runner has not applied 036 yet: refuse, and say what to run.
    let err = next.migrate(&db.pool).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, MigrateError::ArmadaBehind { armada_version: 35, .. }), "{msg}");
    assert!(msg.contains("V036") && msg.contains("lookout --migrateDatabase"), "{msg}");

    // Armada's runner applies 036; lookout-ingester then only records it (running it again would fail).
    run_script(&db.pool, future_036().sql().unwrap()).await;
    sqlx::query("SELECT setval('database_version', 36)").execute(&db.pool).await.unwrap();
    let report = next.migrate(&db.pool).await.unwrap();
    assert_eq!(versions(&report.recorded), [36]);
    assert!(report.applied.is_empty());
    next.ensure_current(&db.pool).await.unwrap();
    assert_eq!(sequence_state(&db.pool).await, Some((36, true)));
}

// ---------------------------------------------------------------------------------------------------------------
// 5. divergence

#[tokio::test]
async fn a_changed_checksum_is_reported_by_version() {
    let db = TestDb::migrated().await;
    sqlx::query(&format!("UPDATE {HISTORY_TABLE} SET checksum = '12345' WHERE version = 7"))
        .execute(&db.pool)
        .await
        .unwrap();
    let v7 = embedded().into_iter().find(|m| m.version() == 7).unwrap();

    let err = migrate::ensure_current(&db.pool).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "migration V007 (queue) was changed after it was applied (checksum in the database 12345 ≠ {} in this binary)",
            v7.checksum()
        )),
        "{msg}"
    );
    let err = migrate::migrate(&db.pool).await.unwrap_err();
    assert!(matches!(err, MigrateError::Diverged { .. }) && err.to_string().contains("V007"), "{err}");

    let status = migrate::status(&db.pool).await.unwrap();
    assert_eq!(status.health(), Health::Diverged);
    assert!(
        matches!(&status.migrations[6].state, MigrationState::Changed { db_checksum, .. } if db_checksum == "12345")
    );
    assert!(status.to_string().contains("CHANGED (database checksum 12345)"));
}

#[tokio::test]
async fn an_edited_migration_file_is_reported_by_version() {
    let db = TestDb::migrated().await;
    let last = *ours().last().unwrap();
    let edited: Vec<Migration> = embedded()
        .into_iter()
        .map(|m| {
            if m.version() == last {
                let sql = format!("{}\n-- edited afterwards\n", m.sql().unwrap());
                Migration::unapplied(&format!("V{}__{}", m.version(), m.name()), &sql).unwrap()
            } else {
                m
            }
        })
        .collect();
    let m = Migrator::new(edited).unwrap();
    for err in [m.ensure_current(&db.pool).await.unwrap_err(), m.migrate(&db.pool).await.unwrap_err()] {
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("migration V{last} (")), "{msg}");
        assert!(msg.contains("was changed after it was applied"), "{msg}");
    }
}

#[tokio::test]
async fn an_applied_version_this_binary_does_not_know_is_reported() {
    let db = TestDb::migrated().await;
    sqlx::query(&format!(
        "INSERT INTO {HISTORY_TABLE} (version, name, applied_on, checksum) VALUES (1500, 'from_the_future', '2030-01-01T00:00:00Z', '1')"
    ))
    .execute(&db.pool)
    .await
    .unwrap();
    for err in [migrate::ensure_current(&db.pool).await.unwrap_err(), migrate::migrate(&db.pool).await.unwrap_err()] {
        let msg = err.to_string();
        assert!(matches!(err, MigrateError::Diverged { .. }), "{msg}");
        assert!(msg.contains("V1500 (from_the_future)") && msg.contains("does not know"), "{msg}");
    }
    let status = migrate::status(&db.pool).await.unwrap();
    assert_eq!(status.health(), Health::Diverged);
    assert!(status.migrations.last().is_some_and(|m| m.version == 1500 && m.checksum.is_none()));
}

// ---------------------------------------------------------------------------------------------------------------
// 6. ensure_current on a database that is behind

#[tokio::test]
async fn ensure_current_names_the_pending_versions_and_the_command() {
    let db = TestDb::new().await;
    let all: Vec<VersionName> =
        embedded().iter().map(|m| VersionName { version: m.version(), name: m.name().into() }).collect();
    let err = migrate::ensure_current(&db.pool).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "database is behind: {} pending migrations ({}); run `lookout-ingester migrate`",
            all.len(),
            migrate::format_versions(&all)
        )
    );

    let first_ours = ours()[0];
    Migrator::embedded().migrate_to(&db.pool, first_ours).await.unwrap();
    let rest: Vec<VersionName> = all.into_iter().filter(|v| v.version > first_ours).collect();
    assert!(!rest.is_empty(), "needs at least two of our own migrations");
    let err = migrate::ensure_current(&db.pool).await.unwrap_err();
    let MigrateError::Behind { pending } = &err else { panic!("{err}") };
    assert_eq!(pending, &rest);
    let msg = err.to_string();
    assert!(msg.contains(&migrate::format_versions(&rest)) && msg.ends_with("run `lookout-ingester migrate`"), "{msg}");
}

// ---------------------------------------------------------------------------------------------------------------
// 7. concurrency

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_migrates_apply_each_version_once() {
    let db = TestDb::new().await;
    let (p1, p2) = (db.new_pool().await, db.new_pool().await);
    let (a, b) = tokio::join!(
        tokio::spawn(async move { migrate::migrate(&p1).await }),
        tokio::spawn(async move { migrate::migrate(&p2).await })
    );
    let (a, b) = (a.unwrap().expect("first migrate"), b.unwrap().expect("second migrate"));
    let mut applied = versions(&a.applied);
    applied.extend(versions(&b.applied));
    applied.sort();
    assert_eq!(applied, all_versions(), "each version applied by exactly one of them");
    let hist: Vec<i32> = history(&db.pool).await.into_iter().map(|(v, _, _)| v).collect();
    assert_eq!(hist, all_versions());
    migrate::ensure_current(&db.pool).await.unwrap();
}

// ---------------------------------------------------------------------------------------------------------------
// crash recovery of a concurrent index build

#[tokio::test]
async fn an_invalid_index_left_by_an_interrupted_build_is_rebuilt() {
    let db = TestDb::new().await;
    Migrator::embedded().migrate_to(&db.pool, 11).await.unwrap();
    // Make an INVALID index under 012's name: a concurrent unique build that fails on duplicates leaves one.
    db.pool
        .execute(
            "INSERT INTO job (job_id, queue, owner, jobset, cpu, memory, ephemeral_storage, gpu, priority, submitted,
                    state, last_transition_time, last_transition_time_seconds, job_spec, annotations)
             SELECT 'job' || i, 'q', 'o', 's', 1, 1, 1, 0, 0, '2026-01-01', 1, '2026-01-01', 1767225600, '\\x00', '{}'
             FROM generate_series(1, 2) i",
        )
        .await
        .unwrap();
    let failed = db.pool.execute("CREATE UNIQUE INDEX CONCURRENTLY idx_job_submitted ON job (submitted DESC)").await;
    assert!(failed.is_err());
    let valid: bool =
        sqlx::query_scalar("SELECT indisvalid FROM pg_index WHERE indexrelid = 'idx_job_submitted'::regclass")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(!valid);

    migrate::migrate(&db.pool).await.unwrap();
    let (valid, unique): (bool, bool) =
        sqlx::query_as("SELECT indisvalid, indisunique FROM pg_index WHERE indexrelid = 'idx_job_submitted'::regclass")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(valid && !unique, "rebuilt as 012 defines it");
    assert_catalog_contains_expected(&db.pool).await;
}

#[test]
fn test_urls_keep_everything_but_the_database() {
    assert_eq!(common::with_database("postgres://u:p@h:1/lookout", "x"), "postgres://u:p@h:1/x");
    assert_eq!(
        common::with_database("postgres://u@h:1/lookout?sslmode=disable", "x"),
        "postgres://u@h:1/x?sslmode=disable"
    );
    assert_eq!(common::with_database("postgres://h:1", "x"), "postgres://h:1/x");
}

#[test]
fn schema_version_constant_matches_the_fixture() {
    assert!(EXPECTED_035.contains(&format!("after Armada's migrations 001-{ARMADA_SCHEMA_VERSION:03}")));
}
