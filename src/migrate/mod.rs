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

pub mod adapter;
pub mod catalog;
pub mod plan;

use std::fmt;
use std::time::{Duration, Instant};

use refinery::{Migration, Runner, Target};
use sqlx::{Connection, Executor, PgConnection, PgPool};

pub use catalog::CatalogDiff;
pub use plan::Blocker;

use adapter::SqlxMigrate;
use plan::{AppliedRow, Facts, Known};

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

/// How often a waiting `migrate` retries the lock, and how often it says it is waiting.
const LOCK_POLL: Duration = Duration::from_millis(200);
const LOCK_LOG_EVERY: Duration = Duration::from_secs(10);

/// A migration's version and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct VersionName {
    pub version: i32,
    pub name: String,
}

impl VersionName {
    /// `V007`, `V1001`.
    pub fn label(&self) -> String {
        label(self.version)
    }
}

impl fmt::Display for VersionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}__{}", self.label(), self.name)
    }
}

fn label(version: i32) -> String {
    format!("V{version:03}")
}

/// Versions as a compact list: runs of three or more consecutive versions become `V001…V035`.
pub fn format_versions(list: &[VersionName]) -> String {
    let mut versions: Vec<i32> = list.iter().map(|v| v.version).collect();
    versions.sort_unstable();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < versions.len() {
        let mut j = i;
        while j + 1 < versions.len() && versions[j + 1] == versions[j] + 1 {
            j += 1;
        }
        if j - i >= 2 {
            parts.push(format!("{}…{}", label(versions[i]), label(versions[j])));
        } else {
            parts.extend(versions[i..=j].iter().map(|v| label(*v)));
        }
        i = j + 1;
    }
    parts.join(", ")
}

fn count(n: usize, what: &str) -> String {
    if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") }
}

/// Where one migration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationState {
    Applied,
    /// `migrate` will run it.
    Pending,
    /// `migrate` will record it as applied without running it (Armada's runner applied it).
    Record,
    /// An Armada migration that Armada's runner (`lookout --migrateDatabase`) must apply first.
    NeedsArmada,
    /// Not applied, but a later one of our own is: added out of order.
    OutOfOrder,
    /// Applied, but with a different name or checksum than this binary's file.
    Changed {
        db_name: String,
        db_checksum: String,
    },
    /// Applied, but unknown to this binary.
    Unknown {
        db_checksum: String,
    },
}

impl MigrationState {
    pub fn as_str(&self) -> &'static str {
        match self {
            MigrationState::Applied => "applied",
            MigrationState::Pending => "pending",
            MigrationState::Record => "pending (record only)",
            MigrationState::NeedsArmada => "pending (Armada's runner)",
            MigrationState::OutOfOrder => "out of order",
            MigrationState::Changed { .. } => "CHANGED",
            MigrationState::Unknown { .. } => "UNKNOWN",
        }
    }
}

/// One line of `migrate status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    pub version: i32,
    pub name: String,
    /// This binary's checksum (`None` for a version only the database knows).
    pub checksum: Option<u64>,
    /// As recorded in the history table (RFC 3339).
    pub applied_on: Option<String>,
    pub state: MigrationState,
}

/// A disagreement between the history table and this binary's migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Divergence {
    Changed { version: i32, name: String, checksum: u64, db_name: String, db_checksum: String },
    Unknown { version: i32, db_name: String },
    OutOfOrder { version: i32, name: String, later_applied: i32 },
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Divergence::Changed { version, name, checksum, db_name, db_checksum } => {
                write!(f, "migration {} ({name}) was changed after it was applied (", label(*version))?;
                if db_name != name {
                    write!(f, "applied under the name {db_name:?}; ")?;
                }
                write!(
                    f,
                    "checksum in the database {db_checksum} ≠ {checksum} in this binary): this binary was built \
                     from different migration files than the ones that migrated the database; run a lookout-ingester \
                     built from the applied files (never edit an applied migration: add a new one)"
                )
            }
            Divergence::Unknown { version, db_name } => write!(
                f,
                "the database has migration {} ({db_name}) applied, which this binary does not know: a newer \
                 lookout-ingester migrated this database; run that version or a newer one",
                label(*version)
            ),
            Divergence::OutOfOrder { version, name, later_applied } => write!(
                f,
                "migration {} ({name}) is not applied, but the later {} is: lookout-ingester's own migrations are \
                 applied strictly in order, so it must be renumbered above every released one",
                label(*version),
                label(*later_applied)
            ),
        }
    }
}

/// Overall state of the database relative to this binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Current,
    Behind,
    Diverged,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Current => "current",
            Health::Behind => "behind",
            Health::Diverged => "diverged",
        }
    }
}

/// The result of `migrate status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Every known migration in version order, then applied versions this binary does not know.
    pub migrations: Vec<MigrationStatus>,
    pub history_table_exists: bool,
    /// `last_value` of Armada's `database_version` sequence, when it exists.
    pub armada_version: Option<i64>,
    /// `Some(armada version)` when `migrate` would adopt this Armada-managed database.
    pub adopt: Option<i64>,
    pub divergences: Vec<Divergence>,
    pub blocker: Option<Blocker>,
    pub warnings: Vec<String>,
}

impl Status {
    pub fn health(&self) -> Health {
        if !self.divergences.is_empty() || self.blocker == Some(Blocker::Unmanaged) {
            Health::Diverged
        } else if self.blocker.is_some() || self.migrations.iter().any(|m| m.state != MigrationState::Applied) {
            Health::Behind
        } else {
            Health::Current
        }
    }

    fn with_state(&self, f: impl Fn(&MigrationState) -> bool) -> Vec<VersionName> {
        self.migrations
            .iter()
            .filter(|m| f(&m.state))
            .map(|m| VersionName { version: m.version, name: m.name.clone() })
            .collect()
    }

    /// Migrations not applied yet (to run, to record, or waiting for Armada's runner).
    pub fn pending(&self) -> Vec<VersionName> {
        self.with_state(|s| matches!(s, MigrationState::Pending | MigrationState::Record | MigrationState::NeedsArmada))
    }

    /// `Ok` when the database is current; otherwise the error that says what is wrong and what to run.
    pub fn check(&self) -> Result<(), MigrateError> {
        if !self.divergences.is_empty() {
            return Err(MigrateError::Diverged { divergences: self.divergences.clone() });
        }
        match &self.blocker {
            Some(Blocker::Unmanaged) => return Err(MigrateError::Unmanaged),
            Some(Blocker::ArmadaBehind { armada_version, missing }) => {
                return Err(MigrateError::ArmadaBehind { armada_version: *armada_version, missing: missing.clone() });
            }
            None => {}
        }
        if let Some(armada_version) = self.adopt {
            return Err(MigrateError::NotAdopted {
                armada_version,
                record: self.with_state(|s| *s == MigrationState::Record),
                pending: self.with_state(|s| *s == MigrationState::Pending),
            });
        }
        let pending = self.pending();
        if !pending.is_empty() {
            return Err(MigrateError::Behind { pending });
        }
        Ok(())
    }
}

/// `migrate status` as a table, then the overall verdict.
impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name_w = self.migrations.iter().map(|m| m.name.len()).max().unwrap_or(4).max(4);
        let state = |m: &MigrationStatus| match &m.state {
            MigrationState::Changed { db_name, db_checksum } if *db_name != m.name => {
                format!("CHANGED (database: {db_name}, {db_checksum})")
            }
            MigrationState::Changed { db_checksum, .. } => format!("CHANGED (database checksum {db_checksum})"),
            MigrationState::Unknown { db_checksum } => format!("UNKNOWN to this binary (checksum {db_checksum})"),
            s => s.as_str().to_string(),
        };
        let states: Vec<String> = self.migrations.iter().map(state).collect();
        let state_w = states.iter().map(|s| s.chars().count()).max().unwrap_or(5).max(5);
        writeln!(f, "{:<7}  {:<name_w$}  {:<20}  {:<state_w$}  APPLIED ON", "VERSION", "NAME", "CHECKSUM", "STATE")?;
        for (m, s) in self.migrations.iter().zip(&states) {
            let checksum = m.checksum.map(|c| c.to_string()).unwrap_or_else(|| "-".into());
            let applied_on = m.applied_on.as_deref().unwrap_or("-");
            writeln!(f, "{:<7}  {:<name_w$}  {checksum:<20}  {s:<state_w$}  {applied_on}", label(m.version), m.name)?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "history table: {HISTORY_TABLE}{}",
            if self.history_table_exists { "" } else { " (not created yet)" }
        )?;
        match self.armada_version {
            Some(v) => writeln!(f, "Armada's database_version: {v} (Armada's migration runner tracks this database)")?,
            None => writeln!(f, "Armada's database_version: none (a database lookout-ingester created)")?,
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        write!(f, "status: {}", self.health().as_str())?;
        match self.check() {
            Ok(()) => Ok(()),
            Err(e) => write!(f, "\n{e}"),
        }
    }
}

/// What `migrate` did, one line per action.
impl fmt::Display for MigrateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        if let Some(v) = self.adopted_from {
            writeln!(f, "adopted the Armada-managed database (database_version = {v}, left unchanged)")?;
        }
        if !self.recorded.is_empty() {
            writeln!(f, "recorded as applied without running: {}", format_versions(&self.recorded))?;
        }
        for m in &self.applied {
            writeln!(f, "applied {m}")?;
        }
        if self.recorded.is_empty() && self.applied.is_empty() {
            write!(f, "nothing to apply: the database is current")
        } else {
            write!(f, "done: {} applied, {} recorded", self.applied.len(), self.recorded.len())
        }
    }
}

/// What `migrate` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrateReport {
    /// Set when an Armada-managed database was adopted (its `database_version`).
    pub adopted_from: Option<i64>,
    /// Recorded as applied without running (Armada's runner had applied them).
    pub recorded: Vec<VersionName>,
    /// Run, in order.
    pub applied: Vec<VersionName>,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "database is behind: {} ({}); run `lookout-ingester migrate`",
        count(pending.len(), "pending migration"), format_versions(pending)
    )]
    Behind { pending: Vec<VersionName> },

    #[error(
        "database is managed by Armada's migration runner (database_version = {armada_version}) and has not been \
         adopted by lookout-ingester yet; run `lookout-ingester migrate`: it checks the schema, records {} as applied \
         without running them, then applies {}",
        format_versions(record), if pending.is_empty() { "nothing else".to_string() } else { format_versions(pending) }
    )]
    NotAdopted { armada_version: i64, record: Vec<VersionName>, pending: Vec<VersionName> },

    #[error(
        "Armada's migrations are behind: database_version is {armada_version}, but this binary needs Armada's {} \
         (not applied); run Armada's `lookout --migrateDatabase` first (lookout-ingester does not run Armada's \
         migrations on a database whose version Armada's runner tracks, and never changes database_version), then \
         `lookout-ingester migrate`",
        format_versions(missing)
    )]
    ArmadaBehind { armada_version: i64, missing: Vec<VersionName> },

    #[error("{}", display_divergences(divergences))]
    Diverged { divergences: Vec<Divergence> },

    #[error(
        "the database has a `job` table but neither lookout-ingester's migration history ({HISTORY_TABLE}) nor \
         Armada's `database_version` sequence: refusing to guess how it was created; migrate it with Armada's \
         `lookout --migrateDatabase` (then `lookout-ingester migrate` adopts it) or use an empty database"
    )]
    Unmanaged,

    #[error(
        "cannot adopt the Armada-managed database (database_version = {armada_version}): its schema differs from \
         what Armada's migrations 001–{:03} create; nothing was changed. Differences:\n{diff}",
        ARMADA_SCHEMA_VERSION
    )]
    SchemaMismatch { armada_version: i64, diff: CatalogDiff },

    #[error("{message}{}", if applied.is_empty() { String::new() } else {
        format!(" (applied before the failure: {})", format_versions(applied)) })]
    Failed { message: String, applied: Vec<VersionName> },

    #[error("database error while {action}: {source}")]
    Database {
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },

    #[error("invalid migration list: {0}")]
    InvalidMigrations(String),
}

fn display_divergences(d: &[Divergence]) -> String {
    match d {
        [one] => one.to_string(),
        many => {
            let mut s = format!("the database has diverged from this binary's migrations ({} problems):", many.len());
            for x in many {
                s.push_str("\n  - ");
                s.push_str(&x.to_string());
            }
            s
        }
    }
}

fn db(action: &'static str) -> impl FnOnce(sqlx::Error) -> MigrateError {
    move |source| MigrateError::Database { action, source }
}

fn failed(err: refinery::Error) -> MigrateError {
    let message = match err.kind() {
        refinery::error::Kind::Connection(msg, source) => {
            // refinery names the migration as we handed it over ("U5__annotations"); show our "V005__annotations".
            let msg = match msg.strip_prefix("error applying migration U").and_then(|r| r.split_once("__")) {
                Some((v, name)) if v.parse::<i32>().is_ok() => {
                    format!("error applying migration {}__{name}", label(v.parse().unwrap_or_default()))
                }
                _ => msg.clone(),
            };
            format!("{msg}: {source}")
        }
        other => other.to_string(),
    };
    let applied = err
        .report()
        .map(|r| {
            r.applied_migrations().iter().map(|m| VersionName { version: m.version(), name: m.name().into() }).collect()
        })
        .unwrap_or_default();
    MigrateError::Failed { message, applied }
}

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
        match plan.blocker {
            Some(Blocker::Unmanaged) => return Err(MigrateError::Unmanaged),
            Some(Blocker::ArmadaBehind { armada_version, missing }) => {
                return Err(MigrateError::ArmadaBehind { armada_version, missing });
            }
            None => {}
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
fn unversioned(m: &Migration) -> Result<Migration, MigrateError> {
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

/// Takes the migration lock, polling (see the module docs for why it does not block in `pg_advisory_lock`).
async fn lock(conn: &mut PgConnection) -> Result<(), MigrateError> {
    let start = Instant::now();
    let mut next_log = start + LOCK_LOG_EVERY;
    loop {
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut *conn)
            .await
            .map_err(db("taking the migration lock"))?;
        if got {
            return Ok(());
        }
        if Instant::now() >= next_log {
            next_log += LOCK_LOG_EVERY;
            let holder: Option<i32> = sqlx::query_scalar(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = \
                 (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND ((classid::bigint << 32) | objid::bigint) = $1 LIMIT 1",
            )
            .bind(LOCK_KEY)
            .fetch_optional(&mut *conn)
            .await
            .ok()
            .flatten();
            tracing::info!(
                waited_s = start.elapsed().as_secs(),
                holder_pid = holder,
                "waiting for another `lookout-ingester migrate` on this database to finish"
            );
        }
        tokio::time::sleep(LOCK_POLL).await;
    }
}

/// [`Migrator::migrate`] with this binary's migrations.
pub async fn migrate(pool: &PgPool) -> Result<MigrateReport, MigrateError> {
    Migrator::embedded().migrate(pool).await
}

/// [`Migrator::status`] with this binary's migrations.
pub async fn status(pool: &PgPool) -> Result<Status, MigrateError> {
    Migrator::embedded().status(pool).await
}

/// The service's startup check: `Ok` when the database is current; otherwise the error says exactly what is wrong
/// and what to run.
pub async fn ensure_current(pool: &PgPool) -> Result<(), MigrateError> {
    Migrator::embedded().ensure_current(pool).await
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn version_lists_are_compact() {
        let vn = |v: &[i32]| v.iter().map(|v| VersionName { version: *v, name: String::new() }).collect::<Vec<_>>();
        assert_eq!(format_versions(&vn(&[1001, 1002, 1003])), "V1001…V1003");
        assert_eq!(format_versions(&vn(&[36, 1001, 1002])), "V036, V1001, V1002");
        assert_eq!(format_versions(&vn(&(1..=35).chain([1001]).collect::<Vec<_>>())), "V001…V035, V1001");
    }

    #[test]
    fn messages_say_what_to_run() {
        let vn = |v: i32| VersionName { version: v, name: format!("m{v}") };
        let e = MigrateError::Behind { pending: vec![vn(1001), vn(1002), vn(1003)] };
        assert_eq!(
            e.to_string(),
            "database is behind: 3 pending migrations (V1001…V1003); run `lookout-ingester migrate`"
        );
        let e = MigrateError::Diverged {
            divergences: vec![Divergence::Changed {
                version: 7,
                name: "queue".into(),
                checksum: 2,
                db_name: "queue".into(),
                db_checksum: "1".into(),
            }],
        };
        assert!(
            e.to_string()
                .starts_with("migration V007 (queue) was changed after it was applied (checksum in the database 1 ≠ 2"),
            "{e}"
        );
        let e = MigrateError::ArmadaBehind { armada_version: 30, missing: (31..=35).map(vn).collect() };
        assert!(e.to_string().contains("V031…V035") && e.to_string().contains("lookout --migrateDatabase"), "{e}");
    }
}
