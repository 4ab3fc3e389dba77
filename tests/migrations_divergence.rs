//! Migrations against a real PostgreSQL, continued: Armada's future 036 after our V1001+, divergence (changed
//! checksum, changed file, unknown version), `ensure_current` on a database that is behind, two concurrent
//! `migrate`s, and recovery from an INVALID concurrent index.

mod support;

use lookout_ingester::migrate::{
    self, ARMADA_SCHEMA_VERSION, HISTORY_TABLE, Health, MigrateError, MigrationState, Migrator, VersionName,
};
use refinery::Migration;
use sqlx::Executor;
use support::db::TestDb;
use support::migrations::*;

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
    assert_eq!(support::db::with_database("postgres://u:p@h:1/lookout", "x"), "postgres://u:p@h:1/x");
    assert_eq!(
        support::db::with_database("postgres://u@h:1/lookout?sslmode=disable", "x"),
        "postgres://u@h:1/x?sslmode=disable"
    );
    assert_eq!(support::db::with_database("postgres://h:1", "x"), "postgres://h:1/x");
}

#[test]
fn schema_version_constant_matches_the_fixture() {
    assert!(EXPECTED_035.contains(&format!("after Armada's migrations 001-{ARMADA_SCHEMA_VERSION:03}")));
}
