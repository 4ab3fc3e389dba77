//! Schema migrations: refinery over sqlx, adoption of an Armada-managed database, and the startup check.
//!
//! # Version numbers
//! - **V001–V999 are Armada's Lookout migrations**, each under Armada's own id (`V031` is Armada's `031_…`),
//!   written for this project with the same effect. V001–V035 exist today.
//! - **V1001 and up are lookout-ingester's own** (new objects live in schema `lookout_ingester` or carry an
//!   `ingester_` prefix, so they cannot clash with what Armada adds later).
//! - History: table `lookout_ingester.refinery_schema_history` (refinery's layout). Armada's `database_version`
//!   sequence is read, never created, changed or dropped.
//!
//! # The rule: a migration is applied when its version is absent from the history, in version order
//! Not "when it is above the highest applied version". This is what makes Armada's future 036 work: it arrives
//! as V036 in a binary whose databases already have V1001+ applied. refinery treats a `V` migration below the
//! highest applied one as missing (an error, or with `abort_missing` off, silently never applied). So the runner
//! hands refinery every migration as an *unversioned* (`U`) one with the same version, name and SQL — hence the same
//! checksum and the same history row — which refinery applies whenever it is absent. What refinery then no longer
//! checks, [`plan`] does:
//! - our own migrations (≥ 1001) stay strictly ordered: one missing below an applied later one is an error (it was
//!   added with a number that is too low; renumber it);
//! - every applied row must match a known migration by name and checksum (else "changed"), and an applied version
//!   this binary does not know means a newer lookout-ingester migrated the database: both are "diverged";
//! - on a database Armada's runner tracks (the `database_version` sequence exists), versions ≤ 999 belong to
//!   Armada's runner: those ≤ its `last_value` are recorded as applied without running them, and a higher one stops
//!   `migrate` with "run Armada's `lookout --migrateDatabase` first" (running it ourselves would make Armada's runner
//!   run it a second time later). Without the sequence (a database lookout-ingester created) we run them.
//!
//! To add Armada's 036 later: write `V036__<name>.sql` like the others, and move the expected listing
//! ([`catalog::EXPECTED_035`]) and [`ARMADA_SCHEMA_VERSION`] to 036.
//!
//! # Adopting a database Armada's runner manages
//! `database_version` exists and our history is empty: if its `last_value` is below [`ARMADA_SCHEMA_VERSION`],
//! refuse (run `lookout --migrateDatabase` first). Otherwise compare the live schema with the expected listing
//! (names, types, nullability, defaults, index and constraint definitions, storage options; never attribute
//! numbers) and refuse with the differences if any (at a *higher* Armada version differences are only warnings,
//! since Armada may have changed things since), record the Armada ids up to `last_value` as applied without running
//! them (refinery `Target::Fake`), then apply ours.
//!
//! # Locking
//! `migrate` holds a session advisory lock ([`LOCK_KEY`], per database) for its whole run, and re-reads the state
//! after taking it, so concurrent `migrate`s apply each migration once. The lock is polled with
//! `pg_try_advisory_lock` rather than awaited: a session blocked in `pg_advisory_lock` holds a snapshot, and
//! `CREATE INDEX CONCURRENTLY` in the lock holder would wait for that snapshot — a deadlock.
//!
//! # Scripts that run outside a transaction
//! See [`adapter`]: a script with a `-- lookout-ingester: no-transaction` line is run step by step in autocommit
//! mode (required for `CREATE INDEX CONCURRENTLY`; also used to keep a NOT VALID constraint and its VALIDATE in
//! separate transactions). Every other script runs in one transaction with its history row.
//!
//! Files: `report` (status, report and error types and their Display), `runner` ([`Migrator`]), `lock` (the
//! advisory lock), `plan` (what to apply, decided from the facts), `catalog` (the expected schema listing),
//! `adapter` (refinery over sqlx).

pub mod adapter;
pub mod catalog;
mod lock;
pub mod plan;
mod report;
mod runner;

use sqlx::PgPool;

pub use catalog::CatalogDiff;
pub use plan::Blocker;
pub use report::{
    Divergence, Health, MigrateError, MigrateReport, MigrationState, MigrationStatus, Status, VersionName,
    format_versions,
};
pub use runner::{Migrator, embedded_migrations};

#[allow(unused_imports, clippy::all)]
mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Highest version reserved for Armada's migration ids; ours start at 1001.
pub const ARMADA_MAX_VERSION: i32 = 999;
/// The Armada migration the expected schema listing ([`catalog::EXPECTED_035`]) describes, and the lowest Armada
/// version a database can be adopted at.
pub const ARMADA_SCHEMA_VERSION: i32 = 35;
/// Schema holding the history table (and our bookkeeping tables, V1001).
pub const HISTORY_SCHEMA: &str = "lookout_ingester";
/// refinery's history table, qualified.
pub const HISTORY_TABLE: &str = "lookout_ingester.refinery_schema_history";
/// Session advisory lock key held while migrating ("lookout-ingester migrate").
pub const LOCK_KEY: i64 = 0x4c49_4d49_4752_4154;

/// [`Migrator::migrate`] with this binary's migrations.
pub async fn migrate(pool: &PgPool) -> Result<MigrateReport, MigrateError> {
    Migrator::embedded().migrate(pool).await
}

/// [`Migrator::status`] with this binary's migrations.
pub async fn status(pool: &PgPool) -> Result<Status, MigrateError> {
    Migrator::embedded().status(pool).await
}

/// `Ok` when the database schema is current for this binary, else the reason (what is wrong and what to run).
/// The single place the service asks the migration module; startup and `/readyz` both call it.
pub async fn schema_current(pool: &PgPool) -> Result<(), String> {
    ensure_current(pool).await.map_err(|e| e.to_string())
}

/// The service's startup check: `Ok` when the database is current; otherwise the error says exactly what is wrong
/// and what to run.
pub async fn ensure_current(pool: &PgPool) -> Result<(), MigrateError> {
    Migrator::embedded().ensure_current(pool).await
}

#[cfg(test)]
mod tests {
    use super::runner::unversioned;
    use super::*;

    fn files() -> Vec<String> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut out = Vec::new();
        let mut stack = vec![std::path::PathBuf::from(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        out
    }

    /// refinery silently skips files whose names do not match its pattern, and `embed_migrations!` does not notice
    /// new files until the crate is rebuilt: compare the directory with what was embedded.
    #[test]
    fn every_file_in_migrations_is_embedded() {
        let files = files();
        let embedded: Vec<String> =
            embedded_migrations().iter().map(|m| format!("V{:0w$}__{}.sql", m.version(), m.name(), w = 3)).collect();
        let mut embedded_sorted = embedded.clone();
        embedded_sorted.sort();
        assert_eq!(
            files, embedded_sorted,
            "migrations/ and the embedded list differ: a file name refinery skips (it must be V<n>__<[a-z0-9_]>.sql, \
             no subdirectories), or a stale build (touch src/migrate/mod.rs)"
        );
        for f in &files {
            let stem = f.strip_suffix(".sql").unwrap();
            let (v, name) = stem.split_once("__").unwrap();
            assert!(v.starts_with('V') && v[1..].chars().all(|c| c.is_ascii_digit()), "{f}");
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'), "{f}");
        }
    }

    #[test]
    fn versions_are_unique_and_in_their_ranges() {
        let list = embedded_migrations();
        let mut versions: Vec<i32> = list.iter().map(|m| m.version()).collect();
        versions.dedup();
        assert_eq!(versions.len(), list.len(), "duplicate versions");
        let armada: Vec<i32> = versions.iter().copied().filter(|v| *v <= ARMADA_MAX_VERSION).collect();
        assert_eq!(armada, (1..=ARMADA_SCHEMA_VERSION).collect::<Vec<_>>(), "Armada ids 1..=35, each once");
        assert!(versions.iter().filter(|v| **v > ARMADA_MAX_VERSION).all(|v| *v >= 1001));
        Migrator::new(list).expect("valid");
    }

    #[test]
    fn concurrent_index_builds_run_alone_and_are_rerunnable() {
        let mut concurrent = Vec::new();
        for m in embedded_migrations() {
            let sql = m.sql().unwrap();
            if let adapter::Script::Steps(steps) = adapter::parse_script(sql).unwrap() {
                for step in steps {
                    if let Some(index) = adapter::concurrent_index_name(&step) {
                        assert!(
                            adapter::strip_comments(&step).to_ascii_uppercase().contains("IF NOT EXISTS"),
                            "{m}: {index} needs IF NOT EXISTS"
                        );
                        concurrent.push(m.version());
                    }
                }
            }
        }
        // Armada's concurrent builds, plus 005's index (built concurrently here, see V005), plus our five failure
        // indexes (V1003).
        assert_eq!(concurrent, [5, 12, 17, 19, 20, 21, 22, 23, 24, 26, 27, 29, 30, 1003, 1003, 1003, 1003, 1003]);
    }

    #[test]
    fn unversioned_copy_keeps_the_checksum() {
        for m in embedded_migrations() {
            let u = unversioned(&m).unwrap();
            assert_eq!((u.version(), u.name(), u.checksum()), (m.version(), m.name(), m.checksum()));
        }
    }
}
