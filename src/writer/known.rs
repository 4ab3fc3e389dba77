//! The jobs this writer knows: for each active job it inserted or last wrote itself, the columns it left in
//! `job` and the runs it created (`changes::known::KnownJob`). A batch's updates to a known job are merged in
//! memory and written by compare-and-set (`store::job::CAS`), without the read side of the guarded merge.
//!
//! Knowledge is learned only after a commit, from what that transaction wrote; a job whose row a statement decided
//! (the guarded merge) is forgotten, as is a job that ends (later events for ended jobs are rare and go through the
//! merge). The map is bounded: when full it is emptied. Stale knowledge (another replica wrote the row, a partition
//! changed hands) is harmless: the compare-and-set fails and the merge decides.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};

use crate::changes::known::{KnownJob, Merged, merge};
use crate::changes::{RowChanges, job_state, settle};
use crate::message::Ts;
use crate::metrics as m;
use crate::store::job::CasRow;

/// Jobs known by default: an entry is a few hundred bytes, and only active jobs are kept.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// The known jobs, shared by the writer's lanes (each lane writes its own jobs; the guard covers any overlap).
#[derive(Debug)]
pub struct KnownJobs {
    capacity: usize,
    jobs: Mutex<Jobs>,
}

/// Job id → what this writer knows of its row (a fast hasher: the map is looked up for every job of every batch).
type Jobs = foldhash::HashMap<String, KnownJob>;

/// A batch's jobs to write by compare-and-set: `(job id, as known, as merged)`.
#[derive(Debug, Default)]
pub struct Plan {
    rows: Vec<(String, KnownJob, KnownJob)>,
}

impl Plan {
    pub fn rows(&self) -> Vec<CasRow<'_>> {
        self.rows.iter().map(|(job_id, was, new)| CasRow { job_id, was, new }).collect()
    }
}

/// What a committed transaction wrote, as far as knowledge goes.
pub struct Outcome<'a> {
    /// The jobs written by compare-and-set.
    pub cas_written: &'a BTreeSet<String>,
    /// Jobs the batch creates that existed already.
    pub existing_jobs: &'a BTreeSet<String>,
    /// The batch went through isolation: nothing is known of what it wrote.
    pub isolated: bool,
}

impl KnownJobs {
    /// Keeps at most `capacity` jobs; 0 keeps none (every update goes through the guarded merge).
    pub fn new(capacity: usize) -> KnownJobs {
        KnownJobs { capacity, jobs: Mutex::new(Jobs::default()) }
    }

    fn lock(&self) -> MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Merges the batch's updates of known stored jobs in memory; those that change are to be written by
    /// compare-and-set.
    pub fn plan(&self, changes: &RowChanges) -> Plan {
        if self.capacity == 0 {
            return Plan::default();
        }
        let jobs = self.lock();
        if jobs.is_empty() {
            return Plan::default();
        }
        let mut rows = Vec::new();
        for (job_id, delta) in &changes.job_updates {
            if changes.jobs.contains_key(job_id) {
                continue;
            }
            let Some(known) = jobs.get(job_id) else { continue };
            if let Merged::Changed(new) = merge(job_id, known, delta, &changes.runs) {
                rows.push((job_id.clone(), known.clone(), *new));
            }
        }
        Plan { rows }
    }

    /// After the commit of `changes` (planned as `plan`): learns the rows the transaction wrote itself and forgets
    /// the jobs whose rows a statement decided.
    pub fn learn(&self, changes: &RowChanges, plan: Plan, outcome: Outcome<'_>) {
        if self.capacity == 0 {
            return;
        }
        let mut jobs = self.lock();
        if outcome.isolated {
            forget_touched(&mut jobs, changes);
            return;
        }
        let mut runs_of: foldhash::HashMap<&str, Vec<(&str, Ts)>> = Default::default();
        for r in changes.runs.values() {
            runs_of.entry(r.job_id.as_str()).or_default().push((r.run_id.as_str(), r.leased));
        }
        let owned = |runs: Option<Vec<(&str, Ts)>>| -> Vec<(String, Ts)> {
            runs.unwrap_or_default().into_iter().map(|(id, at)| (id.to_string(), at)).collect()
        };
        for id in changes.job_updates.keys() {
            if !outcome.cas_written.contains(id) {
                jobs.remove(id);
            }
        }
        let written = plan.rows.iter().filter(|(id, _, _)| outcome.cas_written.contains(id)).count();
        let changed_meanwhile = plan.rows.len() - written;
        for (job_id, _, mut new) in plan.rows {
            if outcome.cas_written.contains(&job_id) {
                new.runs.extend(owned(runs_of.remove(job_id.as_str())));
                self.keep(&mut jobs, job_id, new);
            }
        }
        for (job_id, row) in &changes.jobs {
            if outcome.existing_jobs.contains(job_id) {
                jobs.remove(job_id);
                continue;
            }
            let settled = settle::job(row, changes.job_updates.get(job_id), &changes.runs);
            if job_state::is_terminal(settled.state) {
                // Most jobs of a short life end in the batch that creates them: nothing to build.
                jobs.remove(job_id);
                continue;
            }
            let runs = owned(runs_of.remove(job_id.as_str()));
            self.keep(&mut jobs, job_id.clone(), KnownJob::settled(&settled, runs));
        }
        // Runs created for known jobs without other news of them.
        for (job_id, runs) in runs_of {
            if let Some(known) = jobs.get_mut(job_id) {
                known.runs.extend(owned(Some(runs)));
            }
        }
        m::known_jobs(written, changed_meanwhile, jobs.len());
    }

    /// Forgets the jobs `changes` touches (written by a transaction that decided them in SQL).
    pub fn forget(&self, changes: &RowChanges) {
        if self.capacity == 0 {
            return;
        }
        forget_touched(&mut self.lock(), changes);
    }

    /// Keeps `known` for `job_id`, unless the job has ended; empties a full map first.
    fn keep(&self, jobs: &mut Jobs, job_id: String, known: KnownJob) {
        if job_state::is_terminal(known.state) {
            jobs.remove(&job_id);
            return;
        }
        if jobs.len() >= self.capacity && !jobs.contains_key(&job_id) {
            jobs.clear();
        }
        jobs.insert(job_id, known);
    }
}

/// Removes every job `changes` creates or updates.
fn forget_touched(jobs: &mut Jobs, changes: &RowChanges) {
    for id in changes.jobs.keys().chain(changes.job_updates.keys()) {
        jobs.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::fixtures::{job_row, run_row};
    use crate::changes::{JobPhase, Terminal};
    use crate::message::EventId;

    const T: Ts = 1_700_000_000_000_000;
    const SRC: EventId = EventId { message: 0, event: 0 };

    fn submit(changes: &mut RowChanges, id: &str) {
        changes.jobs.insert(id.into(), job_row(id, 1, T));
    }

    fn lease(changes: &mut RowChanges, job: &str, run: &str, at: Ts) {
        changes.runs.insert(run.into(), run_row(job, run, None, at));
        changes.job(job).progress(Some(run), JobPhase::Leased, at, SRC);
    }

    fn end(changes: &mut RowChanges, job: &str, at: Ts) {
        let t = Terminal {
            state: job_state::SUCCEEDED,
            at,
            cancelled: None,
            cancel_reason: None,
            cancel_user: None,
            failure: Default::default(),
        };
        changes.job(job).terminal(t, SRC);
    }

    fn committed(known: &KnownJobs, changes: &RowChanges, cas_written: &[&str], existing: &[&str]) {
        let plan = known.plan(changes);
        let cas_written: BTreeSet<String> = cas_written.iter().map(|s| s.to_string()).collect();
        let existing_jobs: BTreeSet<String> = existing.iter().map(|s| s.to_string()).collect();
        let outcome = Outcome { cas_written: &cas_written, existing_jobs: &existing_jobs, isolated: false };
        known.learn(changes, plan, outcome);
    }

    #[test]
    fn a_job_is_known_from_its_insert_until_it_ends() {
        let known = KnownJobs::new(10);
        let mut b1 = RowChanges::default();
        submit(&mut b1, "a");
        submit(&mut b1, "done");
        end(&mut b1, "done", T + 1);
        committed(&known, &b1, &[], &[]);
        assert_eq!(known.len(), 1, "an ended job is not kept");

        let mut b2 = RowChanges::default();
        lease(&mut b2, "a", "r1", T + 5);
        let plan = known.plan(&b2);
        assert_eq!(plan.rows.len(), 1);
        let (_, was, new) = &plan.rows[0];
        assert_eq!((was.state, new.state, new.latest_run_id.as_deref()), (1, job_state::LEASED, Some("r1")));
        committed(&known, &b2, &["a"], &[]);
        assert_eq!(known.lock()["a"].runs, vec![("r1".to_string(), T + 5)]);

        let mut b3 = RowChanges::default();
        end(&mut b3, "a", T + 9);
        committed(&known, &b3, &["a"], &[]);
        assert!(known.is_empty());
    }

    #[test]
    fn a_job_the_statement_decided_is_forgotten() {
        let known = KnownJobs::new(10);
        let mut b1 = RowChanges::default();
        submit(&mut b1, "a");
        submit(&mut b1, "b");
        submit(&mut b1, "old");
        // `old` existed already: what the batch settled is not what is stored.
        committed(&known, &b1, &[], &["old"]);
        assert_eq!(known.len(), 2);

        // The guard failed for `a` (changed meanwhile): the merge decided it.
        let mut b2 = RowChanges::default();
        lease(&mut b2, "a", "r1", T + 5);
        lease(&mut b2, "b", "r2", T + 5);
        committed(&known, &b2, &["b"], &[]);
        let jobs = known.lock();
        assert!(!jobs.contains_key("a") && jobs.contains_key("b"));
    }

    #[test]
    fn a_full_map_is_emptied_and_zero_keeps_nothing() {
        let known = KnownJobs::new(2);
        let mut b = RowChanges::default();
        for id in ["a", "b", "c"] {
            submit(&mut b, id);
        }
        committed(&known, &b, &[], &[]);
        assert_eq!(known.len(), 1, "the third job found the map full");

        let off = KnownJobs::new(0);
        committed(&off, &b, &[], &[]);
        assert!(off.is_empty());
    }
}
