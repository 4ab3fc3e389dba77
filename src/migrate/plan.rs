//! Decides, from what the database holds and what this binary embeds, which migrations are applied, which will be
//! run, which will only be recorded, and what is wrong. Pure: no I/O, so every rule is unit-tested here.

use std::collections::BTreeMap;

use super::{ARMADA_MAX_VERSION, Divergence, MigrationState, MigrationStatus, VersionName};

/// A migration this binary knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub version: i32,
    pub name: String,
    pub checksum: u64,
}

/// A row of the history table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedRow {
    pub version: i32,
    pub name: String,
    /// As stored (text); a value that is not a u64 can never match.
    pub checksum: String,
    pub applied_on: String,
}

/// What the database says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Rows of lookout-ingester's history table (empty when the table does not exist).
    pub applied: Vec<AppliedRow>,
    /// `last_value` of Armada's `database_version` sequence, when that sequence exists.
    pub armada_version: Option<i64>,
    /// Whether a `job` table exists (with no history and no Armada sequence it was made by something unknown).
    pub job_table_exists: bool,
}

/// Why `migrate` cannot go on (besides divergence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocker {
    /// Armada's runner tracks this database and has not applied these Armada migrations yet.
    ArmadaBehind { armada_version: i64, missing: Vec<VersionName> },
    /// Tables exist, but neither our history nor Armada's version sequence says how they were made.
    Unmanaged,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Every known migration in version order, then applied versions this binary does not know.
    pub entries: Vec<MigrationStatus>,
    pub divergences: Vec<Divergence>,
    pub blocker: Option<Blocker>,
    /// `Some(armada version)` when the database is Armada-managed and has no history yet: it will be adopted.
    pub adopt: Option<i64>,
    /// Versions to record as applied without running them (Armada's runner already applied them).
    pub record: Vec<VersionName>,
    /// Versions to run, in order.
    pub run: Vec<VersionName>,
    pub warnings: Vec<String>,
}

pub fn make(known: &[Known], facts: &Facts) -> Plan {
    let applied: BTreeMap<i32, &AppliedRow> = facts.applied.iter().map(|r| (r.version, r)).collect();
    let adopt = match facts.armada_version {
        Some(v) if facts.applied.is_empty() => Some(v),
        _ => None,
    };
    let max_applied_ours = facts.applied.iter().map(|r| r.version).filter(|v| *v > ARMADA_MAX_VERSION).max();
    let mut plan = Plan {
        entries: Vec::new(),
        divergences: Vec::new(),
        blocker: None,
        adopt,
        record: Vec::new(),
        run: Vec::new(),
        warnings: Vec::new(),
    };
    let mut armada_missing = Vec::new();

    for k in known {
        let vn = VersionName { version: k.version, name: k.name.clone() };
        let state = match applied.get(&k.version) {
            Some(row) => {
                if row.name != k.name || row.checksum != k.checksum.to_string() {
                    plan.divergences.push(Divergence::Changed {
                        version: k.version,
                        name: k.name.clone(),
                        checksum: k.checksum,
                        db_name: row.name.clone(),
                        db_checksum: row.checksum.clone(),
                    });
                    MigrationState::Changed { db_name: row.name.clone(), db_checksum: row.checksum.clone() }
                } else {
                    MigrationState::Applied
                }
            }
            None if k.version <= ARMADA_MAX_VERSION => match facts.armada_version {
                // Armada's runner owns Armada's ids on a database it tracks: what it applied is recorded, the rest
                // is left to it.
                Some(av) if i64::from(k.version) <= av => {
                    plan.record.push(vn.clone());
                    MigrationState::Record
                }
                Some(_) => {
                    armada_missing.push(vn.clone());
                    MigrationState::NeedsArmada
                }
                None => {
                    plan.run.push(vn.clone());
                    MigrationState::Pending
                }
            },
            None => match max_applied_ours {
                // Our own migrations are strictly ordered: one below an applied later one was added out of order.
                Some(max) if k.version < max => {
                    plan.divergences.push(Divergence::OutOfOrder {
                        version: k.version,
                        name: k.name.clone(),
                        later_applied: max,
                    });
                    MigrationState::OutOfOrder
                }
                _ => {
                    plan.run.push(vn.clone());
                    MigrationState::Pending
                }
            },
        };
        plan.entries.push(MigrationStatus {
            version: k.version,
            name: k.name.clone(),
            checksum: Some(k.checksum),
            applied_on: applied.get(&k.version).map(|r| r.applied_on.clone()),
            state,
        });
    }

    for row in &facts.applied {
        if !known.iter().any(|k| k.version == row.version) {
            plan.divergences.push(Divergence::Unknown { version: row.version, db_name: row.name.clone() });
            plan.entries.push(MigrationStatus {
                version: row.version,
                name: row.name.clone(),
                checksum: None,
                applied_on: Some(row.applied_on.clone()),
                state: MigrationState::Unknown { db_checksum: row.checksum.clone() },
            });
        }
    }

    if let Some(av) = facts.armada_version {
        let max_known_armada = known.iter().map(|k| k.version).filter(|v| *v <= ARMADA_MAX_VERSION).max();
        if !armada_missing.is_empty() {
            plan.blocker = Some(Blocker::ArmadaBehind { armada_version: av, missing: armada_missing });
        } else if max_known_armada.is_some_and(|m| av > i64::from(m)) {
            plan.warnings.push(format!(
                "Armada's database_version is {av}, newer than the Armada migrations this binary knows (up to \
                 V{:03}); the schema may have changed in ways this ingester does not expect: upgrade lookout-ingester",
                max_known_armada.unwrap_or(0)
            ));
        }
    } else if facts.applied.is_empty() && facts.job_table_exists {
        plan.blocker = Some(Blocker::Unmanaged);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(versions: &[i32]) -> Vec<Known> {
        versions.iter().map(|v| Known { version: *v, name: format!("m{v}"), checksum: 1000 + *v as u64 }).collect()
    }

    fn applied(versions: &[i32]) -> Vec<AppliedRow> {
        versions
            .iter()
            .map(|v| AppliedRow {
                version: *v,
                name: format!("m{v}"),
                checksum: (1000 + *v as u64).to_string(),
                applied_on: "2026-01-01T00:00:00Z".into(),
            })
            .collect()
    }

    fn versions(v: &[VersionName]) -> Vec<i32> {
        v.iter().map(|x| x.version).collect()
    }

    #[test]
    fn fresh_database_runs_everything() {
        let p = make(&known(&[1, 2, 35, 1001]), &Facts::default());
        assert_eq!(versions(&p.run), [1, 2, 35, 1001]);
        assert!(p.divergences.is_empty() && p.blocker.is_none() && p.adopt.is_none() && p.record.is_empty());
    }

    #[test]
    fn current_database_has_nothing_to_do() {
        let p = make(&known(&[1, 2, 1001]), &Facts { applied: applied(&[1, 2, 1001]), ..Default::default() });
        assert!(p.run.is_empty() && p.record.is_empty() && p.divergences.is_empty());
        assert!(p.entries.iter().all(|e| e.state == MigrationState::Applied));
    }

    #[test]
    fn a_later_armada_migration_runs_after_our_own_ones() {
        // V036 added to the binary after V1001/V1002 were applied: it is pending, not "missing".
        let facts = Facts { applied: applied(&[1, 35, 1001, 1002]), ..Default::default() };
        let p = make(&known(&[1, 35, 36, 1001, 1002]), &facts);
        assert_eq!(versions(&p.run), [36]);
        assert!(p.divergences.is_empty());
    }

    #[test]
    fn our_own_migrations_must_stay_in_order() {
        let facts = Facts { applied: applied(&[1, 1001, 1003]), ..Default::default() };
        let p = make(&known(&[1, 1001, 1002, 1003]), &facts);
        assert_eq!(
            p.divergences,
            vec![Divergence::OutOfOrder { version: 1002, name: "m1002".into(), later_applied: 1003 }]
        );
    }

    #[test]
    fn adoption_at_35_records_armada_ids_and_runs_ours() {
        let facts = Facts { armada_version: Some(35), job_table_exists: true, ..Default::default() };
        let p = make(&known(&[1, 2, 35, 1001, 1002]), &facts);
        assert_eq!(p.adopt, Some(35));
        assert_eq!(versions(&p.record), [1, 2, 35]);
        assert_eq!(versions(&p.run), [1001, 1002]);
        assert!(p.blocker.is_none() && p.warnings.is_empty());
    }

    #[test]
    fn adoption_below_35_is_blocked() {
        let facts = Facts { armada_version: Some(30), job_table_exists: true, ..Default::default() };
        let p = make(&known(&[1, 30, 31, 35, 1001]), &facts);
        assert_eq!(
            p.blocker,
            Some(Blocker::ArmadaBehind {
                armada_version: 30,
                missing: vec![
                    VersionName { version: 31, name: "m31".into() },
                    VersionName { version: 35, name: "m35".into() }
                ]
            })
        );
    }

    #[test]
    fn adoption_above_known_warns() {
        let facts = Facts { armada_version: Some(37), job_table_exists: true, ..Default::default() };
        let p = make(&known(&[1, 35, 1001]), &facts);
        assert_eq!(versions(&p.record), [1, 35]);
        assert!(p.blocker.is_none());
        assert!(p.warnings[0].contains("newer"), "{:?}", p.warnings);
    }

    #[test]
    fn co_managed_database_defers_armada_ids_to_armada() {
        // Adopted earlier; the binary now knows V036.
        let base = Facts { applied: applied(&[1, 35, 1001]), armada_version: Some(35), job_table_exists: true };
        let p = make(&known(&[1, 35, 36, 1001]), &base);
        assert!(matches!(p.blocker, Some(Blocker::ArmadaBehind { armada_version: 35, .. })));
        // After Armada's runner applied 036, it is recorded, not run.
        let p = make(&known(&[1, 35, 36, 1001]), &Facts { armada_version: Some(36), ..base });
        assert!(p.blocker.is_none());
        assert_eq!(versions(&p.record), [36]);
        assert!(p.run.is_empty());
    }

    #[test]
    fn changed_and_unknown_versions_diverge() {
        let mut rows = applied(&[1, 2, 1500]);
        rows[1].checksum = "7".into();
        let p = make(&known(&[1, 2]), &Facts { applied: rows, ..Default::default() });
        assert_eq!(p.divergences.len(), 2);
        assert!(matches!(&p.divergences[0], Divergence::Changed { version: 2, db_checksum, .. } if db_checksum == "7"));
        assert!(matches!(&p.divergences[1], Divergence::Unknown { version: 1500, .. }));
        assert_eq!(p.entries.len(), 3);
    }

    #[test]
    fn tables_without_any_version_record_are_not_touched() {
        let p = make(&known(&[1]), &Facts { job_table_exists: true, ..Default::default() });
        assert_eq!(p.blocker, Some(Blocker::Unmanaged));
    }
}
