//! The runner: [`Migrator`] reads the database's migration state, plans (see `plan`), adopts an Armada-managed
//! database, and applies the missing migrations through refinery, under the migration lock (`lock`).

use refinery::{Migration, Runner, Target};
use sqlx::{Connection, Executor, PgConnection, PgPool};

use super::adapter::{self, SqlxMigrate};
use super::lock::lock;
use super::plan::{self, AppliedRow, Facts, Known};
use super::report::{db, failed, label};
use super::*;

/// The migrations embedded from `migrations/` at build time, in version order.
pub fn embedded_migrations() -> Vec<Migration> {
    let mut list = embedded::migrations::runner().get_migrations().clone();
    list.sort();
    list
}

/// Applies, checks and reports a list of migrations (normally [`Migrator::embedded`]; tests build others).
#[derive(Debug, Clone)]
pub struct Migrator {
    migrations: Vec<Migration>,
}

impl Migrator {
    /// This binary's migrations.
    pub fn embedded() -> Migrator {
        Migrator::new(embedded_migrations()).expect("embedded migrations are valid (checked by unit tests)")
    }

    /// A migrator over any list (versions must be unique; scripts must follow the no-transaction rules).
    pub fn new(mut migrations: Vec<Migration>) -> Result<Migrator, MigrateError> {
        migrations.sort();
        for pair in migrations.windows(2) {
            if pair[0].version() == pair[1].version() {
                return Err(MigrateError::InvalidMigrations(format!(
                    "version {} is used twice ({} and {})",
                    label(pair[0].version()),
                    pair[0].name(),
                    pair[1].name()
                )));
            }
        }
        for m in &migrations {
            adapter::parse_script(m.sql().unwrap_or_default())
                .map_err(|e| MigrateError::InvalidMigrations(format!("{m}: {e}")))?;
        }
        Ok(Migrator { migrations })
    }

    pub fn migrations(&self) -> &[Migration] {
        &self.migrations
    }

    fn known(&self) -> Vec<Known> {
        self.migrations
            .iter()
            .map(|m| Known { version: m.version(), name: m.name().to_string(), checksum: m.checksum() })
            .collect()
    }

    /// Every migration and where it stands. Read-only (creates nothing, takes no lock).
    pub async fn status(&self, pool: &PgPool) -> Result<Status, MigrateError> {
        let mut conn = pool.acquire().await.map_err(db("connecting"))?;
        let facts = read_facts(&mut conn).await?;
        let plan = plan::make(&self.known(), &facts.facts);
        Ok(Status {
            migrations: plan.entries,
            history_table_exists: facts.history_table_exists,
            armada_version: facts.facts.armada_version,
            adopt: plan.adopt,
            divergences: plan.divergences,
            blocker: plan.blocker,
            warnings: plan.warnings,
        })
    }

    /// `Ok` when the database is current, else an error saying what is wrong and what to run.
    pub async fn ensure_current(&self, pool: &PgPool) -> Result<(), MigrateError> {
        let status = self.status(pool).await?;
        for w in &status.warnings {
            tracing::warn!("{w}");
        }
        status.check()
    }

    /// Applies every pending migration (adopting an Armada-managed database first if needed).
    pub async fn migrate(&self, pool: &PgPool) -> Result<MigrateReport, MigrateError> {
        self.run(pool, Target::Latest).await
    }

    /// Like [`Migrator::migrate`], but stops after `version` (for tests and staged rollouts).
    pub async fn migrate_to(&self, pool: &PgPool, version: i32) -> Result<MigrateReport, MigrateError> {
        self.run(pool, Target::Version(version)).await
    }

    async fn run(&self, pool: &PgPool, target: Target) -> Result<MigrateReport, MigrateError> {
        // A connection of its own: the session lock lives and dies with it.
        let mut conn = pool.acquire().await.map_err(db("connecting"))?.detach();
        lock(&mut conn).await?;
        let result = self.run_locked(&mut conn, target).await;
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)").bind(LOCK_KEY).execute(&mut conn).await;
        let _ = conn.close().await;
        result
    }

    async fn run_locked(&self, conn: &mut PgConnection, target: Target) -> Result<MigrateReport, MigrateError> {
        let facts = read_facts(conn).await?;
        let plan = plan::make(&self.known(), &facts.facts);
        if !plan.divergences.is_empty() {
            return Err(MigrateError::Diverged { divergences: plan.divergences });
        }
        if let Some(blocker) = &plan.blocker {
            return Err(MigrateError::from(blocker));
        }
        let mut report = MigrateReport { adopted_from: plan.adopt, warnings: plan.warnings, ..Default::default() };

        if let Some(armada_version) = plan.adopt {
            let listing = catalog::listing(conn).await.map_err(db("listing the schema"))?;
            let diff = catalog::diff(catalog::EXPECTED_035, &listing);
            if !diff.is_empty() {
                if armada_version <= i64::from(ARMADA_SCHEMA_VERSION) {
                    return Err(MigrateError::SchemaMismatch { armada_version, diff });
                }
                report.warnings.push(format!(
                    "the schema differs from what Armada's migrations 001–{ARMADA_SCHEMA_VERSION:03} create (expected \
                     at database_version {armada_version}, which is newer):\n{diff}"
                ));
            }
            tracing::info!(armada_version, "adopting the Armada-managed database");
        }
        for w in &report.warnings {
            tracing::warn!("{w}");
        }

        conn.execute(format!("CREATE SCHEMA IF NOT EXISTS {HISTORY_SCHEMA}").as_str())
            .await
            .map_err(db("creating the history schema"))?;

        if !plan.record.is_empty() {
            let applied: Vec<i32> = facts.facts.applied.iter().map(|r| r.version).collect();
            let list: Vec<Migration> = self
                .migrations
                .iter()
                .filter(|m| applied.contains(&m.version()) || plan.record.iter().any(|r| r.version == m.version()))
                .map(unversioned)
                .collect::<Result<_, _>>()?;
            let mut runner = Runner::new(&list).set_target(Target::Fake);
            runner.set_migration_table_name(HISTORY_TABLE);
            runner.run_async(&mut SqlxMigrate::new(conn)).await.map_err(failed)?;
            tracing::info!(versions = %format_versions(&plan.record), "recorded as applied without running");
            report.recorded = plan.record;
        }

        let all: Vec<Migration> = self.migrations.iter().map(unversioned).collect::<Result<_, _>>()?;
        let mut runner = Runner::new(&all).set_target(target);
        runner.set_migration_table_name(HISTORY_TABLE);
        let done = runner.run_async(&mut SqlxMigrate::new(conn)).await.map_err(failed)?;
        report.applied = done
            .applied_migrations()
            .iter()
            .map(|m| VersionName { version: m.version(), name: m.name().to_string() })
            .collect();
        if !report.applied.is_empty() {
            tracing::info!(versions = %format_versions(&report.applied), "applied");
        }
        Ok(report)
    }
}

/// The same migration as an unversioned (`U`) one: same version, name and SQL, hence the same checksum, but refinery
/// applies it whenever it is absent from the history rather than only above the highest applied version.
pub(super) fn unversioned(m: &Migration) -> Result<Migration, MigrateError> {
    Migration::unapplied(&format!("U{}__{}", m.version(), m.name()), m.sql().unwrap_or_default())
        .map_err(|e| MigrateError::InvalidMigrations(format!("{m}: {e}")))
}

struct DbFacts {
    facts: Facts,
    history_table_exists: bool,
}

async fn read_facts(conn: &mut PgConnection) -> Result<DbFacts, MigrateError> {
    let (history, armada_seq, job): (bool, bool, bool) = sqlx::query_as(
        "SELECT to_regclass($1) IS NOT NULL,
                EXISTS (SELECT 1 FROM pg_class WHERE oid = to_regclass('database_version') AND relkind = 'S'),
                to_regclass('job') IS NOT NULL",
    )
    .bind(HISTORY_TABLE)
    .fetch_one(&mut *conn)
    .await
    .map_err(db("reading the migration state"))?;

    let mut facts = Facts { job_table_exists: job, ..Default::default() };
    if armada_seq {
        // Armada's runner reads the version the same way (the sequence in the first schema of search_path).
        let v: i64 = sqlx::query_scalar("SELECT last_value FROM database_version")
            .fetch_one(&mut *conn)
            .await
            .map_err(db("reading Armada's database_version"))?;
        facts.armada_version = Some(v);
    }
    if history {
        let rows: Vec<adapter::HistoryRow> = sqlx::query_as(&format!(
            "SELECT version, name, applied_on, checksum FROM {HISTORY_TABLE} ORDER BY version"
        ))
        .fetch_all(&mut *conn)
        .await
        .map_err(db("reading the migration history"))?;
        facts.applied = rows
            .into_iter()
            .map(|(version, name, applied_on, checksum)| AppliedRow {
                version,
                name: name.unwrap_or_default(),
                checksum: checksum.unwrap_or_default(),
                applied_on: applied_on.unwrap_or_default(),
            })
            .collect();
    }
    Ok(DbFacts { facts, history_table_exists: history })
}
