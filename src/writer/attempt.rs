//! One transaction for one batch: positions (and gaps, `gaps`), parked events, rows, dead letters, commit.

use std::collections::HashMap;

use sqlx::{Acquire, PgConnection};

use super::known::{Outcome, Plan};
use super::records::{in_stream_order, parked_rows, quarantine_rows, sanitized_rows, unparked_message};
use super::{WriteReport, Writer};
use crate::batch::Batch;
use crate::changes::{Quarantined, RowChanges};
use crate::convert::Converter;
use crate::decode::DecodedMessage;
use crate::store::parked::WaitsFor;
use crate::store::{parked, position, quarantine, sanitized, stage};

impl Writer {
    /// One try at writing the batch in one transaction (`isolate`: find the events Postgres rejects).
    pub(super) async fn attempt(&self, batch: &Batch, isolate: bool) -> sqlx::Result<WriteReport> {
        let mut conn = self.store.acquire().await?;
        let mut tx = conn.begin().await?;
        let mut report = WriteReport::default();

        // 1. positions: lock, and skip what is already committed; hold back what follows a gap (`gaps`).
        let topics: Vec<String> = {
            let set: std::collections::BTreeSet<&str> =
                batch.messages.iter().map(|m| m.raw.position.source.as_ref()).collect();
            set.into_iter().map(str::to_string).collect()
        };
        let committed = match &self.subscription {
            Some(sub) => position::lock(&mut tx, sub, &topics).await?,
            None => HashMap::new(),
        };
        let verdict = self.gaps.as_ref().map(|g| g.check(&batch.messages, &committed)).unwrap_or_default();
        let mut highest: position::Positions = HashMap::new();
        let mut fresh: Vec<&DecodedMessage> = Vec::with_capacity(batch.messages.len());
        for (i, msg) in batch.messages.iter().enumerate() {
            if verdict.excluded.contains(&i) {
                continue;
            }
            let p = &msg.raw.position;
            match highest.get_mut(p.source.as_ref()) {
                Some(top) => *top = (*top).max(p.id),
                None => drop(highest.insert(p.source.to_string(), p.id)),
            }
            if committed.get(p.source.as_ref()).is_none_or(|done| p.id > *done) {
                fresh.push(msg);
            }
        }
        report.held_back_messages = verdict.held_back;
        report.gaps = verdict.gaps;
        report.skipped_messages = batch.messages.len() - fresh.len() - report.held_back_messages;
        report.committed_messages = fresh.len();
        report.committed_events = fresh.iter().map(|m| m.event_count()).sum();

        // 2. parked events whose parent this batch creates.
        let Taken { messages: parked_msgs, created } = take_parked(&mut tx, &self.converter, &fresh).await?;
        report.unparked = parked_msgs.len();
        let view: Vec<&DecodedMessage> = parked_msgs.iter().chain(fresh.iter().copied()).collect();
        let reconverted;
        let changes: &RowChanges = if parked_msgs.is_empty() && fresh.len() == batch.messages.len() {
            &batch.changes
        } else {
            reconverted = self.converter.convert(&view, &|_| true);
            &reconverted
        };
        report.ignored = changes.ignored.iter().map(|(kind, n)| (*kind, *n)).collect();

        // 3. rows.
        let mut rejected: Vec<Quarantined> = Vec::new();
        let plan = if isolate { Plan::default() } else { self.known.plan(changes) };
        let written = if isolate {
            self.isolate(&mut tx, &view, &mut rejected).await?
        } else {
            stage::write_changes(&mut tx, changes, &plan.rows(), false).await?
        };
        report.rows = written.rows;

        // 4. park orphans, record dead letters and sanitized values.
        let park_rows = parked_rows(&view, &written.orphans);
        report.parked = parked::insert(&mut tx, &park_rows).await?;
        (report.watch_jobs, report.watch_runs) = watch_list(created, &park_rows);
        for row in &park_rows {
            match report.parked_by_kind.iter_mut().find(|(k, _)| *k == row.event_kind) {
                Some((_, n)) => *n += 1,
                None => report.parked_by_kind.push((row.event_kind.clone(), 1)),
            }
        }
        let dead: Vec<&Quarantined> = changes.quarantined.iter().chain(&rejected).collect();
        report.quarantined = quarantine::insert(&mut tx, &quarantine_rows(&view, dead.iter().copied())).await?;
        report.quarantine_reasons = dead.iter().map(|q| q.reason.as_str()).collect();
        // Re-applied parked events come first in the view; their values were recorded when they were first seen.
        let first_seen: Vec<_> =
            changes.sanitized.iter().filter(|s| s.source.message as usize >= parked_msgs.len()).collect();
        report.sanitized = sanitized::insert(&mut tx, &sanitized_rows(&view, &first_seen)).await?;
        report.sanitized_fields = first_seen.iter().map(|s| (s.field, s.fix)).collect();

        // 5. positions, commit.
        if let Some(sub) = &self.subscription {
            position::save(&mut tx, sub, &highest).await?;
        }
        tx.commit().await?;
        let outcome =
            Outcome { cas_written: &written.cas_written, existing_jobs: &written.existing_jobs, isolated: isolate };
        self.known.learn(changes, plan, outcome);
        report.committed = highest;
        Ok(report)
    }
}

/// What [`take_parked`] took, and every job and run that the given messages and the taken ones create.
pub(super) struct Taken {
    pub messages: Vec<DecodedMessage>,
    pub created: (Vec<String>, Vec<String>),
}

/// Takes, in rounds, the parked events whose parent the batch creates (a parked lease creates a run, which can
/// release events waiting for that run), and returns them as single-event messages in their original order.
pub(super) async fn take_parked(
    conn: &mut PgConnection,
    converter: &Converter,
    fresh: &[&DecodedMessage],
) -> sqlx::Result<Taken> {
    let (mut jobs, mut runs) = converter.created_ids(fresh);
    let mut created = (jobs.clone(), runs.clone());
    let mut out: Vec<DecodedMessage> = Vec::new();
    let mut rounds = 0;
    while (!jobs.is_empty() || !runs.is_empty()) && rounds < 8 {
        rounds += 1;
        let job_refs: Vec<&str> = jobs.iter().map(String::as_str).collect();
        let run_refs: Vec<&str> = runs.iter().map(String::as_str).collect();
        let rows = parked::take(conn, &job_refs, &run_refs).await?;
        if rows.is_empty() {
            break;
        }
        let taken: Vec<DecodedMessage> = rows.into_iter().map(unparked_message).collect();
        let refs: Vec<&DecodedMessage> = taken.iter().collect();
        (jobs, runs) = converter.created_ids(&refs);
        created.0.extend(jobs.iter().cloned());
        created.1.extend(runs.iter().cloned());
        out.extend(taken);
    }
    in_stream_order(&mut out);
    Ok(Taken { messages: out, created })
}

/// The jobs and runs created (as [`take_parked`] found them), and those the parked rows wait for, each sorted and
/// once.
fn watch_list(created: (Vec<String>, Vec<String>), parked: &[parked::Row]) -> (Vec<String>, Vec<String>) {
    let (mut jobs, mut runs) = created;
    for row in parked {
        match (WaitsFor::parse(&row.waits_for), &row.run_id) {
            (WaitsFor::Run, Some(run)) => runs.push(run.clone()),
            _ => jobs.push(row.job_id.clone()),
        }
    }
    for ids in [&mut jobs, &mut runs] {
        ids.sort();
        ids.dedup();
    }
    (jobs, runs)
}
