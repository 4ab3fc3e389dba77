//! Migration reports: what `migrate status` shows ([`Status`]), what a run did ([`MigrateReport`]), why it stopped
//! ([`MigrateError`]), and how each reads on a terminal.

use std::fmt;

use super::plan::Blocker;
use super::{ARMADA_SCHEMA_VERSION, CatalogDiff, HISTORY_TABLE};

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

pub(super) fn label(version: i32) -> String {
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
        if let Some(blocker) = &self.blocker {
            return Err(MigrateError::from(blocker));
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

pub(super) fn db(action: &'static str) -> impl FnOnce(sqlx::Error) -> MigrateError {
    move |source| MigrateError::Database { action, source }
}

pub(super) fn failed(err: refinery::Error) -> MigrateError {
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

/// What `migrate` refuses to do, as the error that says what to run instead (the one mapping of a [`Blocker`]).
impl From<&Blocker> for MigrateError {
    fn from(blocker: &Blocker) -> Self {
        match blocker {
            Blocker::Unmanaged => MigrateError::Unmanaged,
            Blocker::ArmadaBehind { armada_version, missing } => {
                MigrateError::ArmadaBehind { armada_version: *armada_version, missing: missing.clone() }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
