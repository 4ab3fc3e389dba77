//! Migrations against a real PostgreSQL (env `DATABASE_URL`, see tests/support/db.rs): each test on a fresh database.
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
//! (Divergence, Armada's 036, `ensure_current`, concurrency and index recovery: `migrations_divergence.rs`.)

mod support;

use lookout_ingester::migrate::{self, Health, MigrateError, MigrationState, Migrator, catalog};
use serde_json::Value;
use sqlx::Executor;
use support::db::TestDb;
use support::migrations::*;

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
