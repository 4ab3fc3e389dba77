//! Reconciliation: re-applies parked events whose parent job or run exists by now (created by a concurrent
//! transaction that neither saw the other's uncommitted rows).

use sqlx::{Acquire, PgConnection};

use super::attempt::take_parked;
use super::records::{in_stream_order, parked_rows, quarantine_rows, unparked_message};
use super::{WriteReport, Writer};
use crate::changes::Quarantined;
use crate::decode::DecodedMessage;
use crate::metrics as m;
use crate::store::{ErrorClass, classify, parked, quarantine, stage};

/// Parked events re-applied per transaction by [`Writer::reconcile`].
const RECONCILE_ROUND: i64 = 10_000;

impl Writer {
    /// After a commit. A concurrent transaction (another lane, or another replica) may have parked an event whose
    /// parent this one created, or created the parent of an event this one parked: neither saw the other's
    /// uncommitted rows. Whichever of the two commits last finds the pair here, so the event is applied now instead
    /// of waiting for ever. A failure is logged and left to the periodic sweep ([`Writer::reconcile`] with `None`).
    pub(super) async fn reconcile_after(&self, report: &WriteReport) {
        if report.watch_jobs.is_empty() && report.watch_runs.is_empty() {
            return;
        }
        match self.reconcile(Some((&report.watch_jobs, &report.watch_runs))).await {
            Ok(0) => {}
            Ok(n) => {
                m::reconciled("after_commit", n);
                tracing::info!(events = n, "re-applied parked events whose parent a concurrent transaction created");
            }
            Err(e) => tracing::warn!(error = %e, "could not re-check parked events after a commit (the sweep will)"),
        }
    }

    /// Re-applies parked events whose parent job or run exists now: those waiting for the given jobs and runs, or
    /// all of them (`None`, the periodic sweep, in rounds of [`RECONCILE_ROUND`]). Each round is one transaction:
    /// the events are taken, applied with the events waiting for what they create, and whatever still lacks a
    /// parent is parked again. Returns the number of events taken.
    pub async fn reconcile(&self, only: Option<(&[String], &[String])>) -> sqlx::Result<usize> {
        let mut conn = self.store.acquire().await?;
        if !parked::any(&mut conn).await? {
            return Ok(0);
        }
        let (mut total, mut rounds, mut isolate) = (0, 0, false);
        while rounds < 16 {
            match self.reconcile_round(&mut conn, only, isolate).await {
                Ok(0) => break,
                Ok(n) => {
                    total += n;
                    rounds += 1;
                    if only.is_some() {
                        break;
                    }
                }
                Err(e) if classify(&e) == ErrorClass::Data && !isolate => isolate = true,
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    async fn reconcile_round(
        &self,
        conn: &mut PgConnection,
        only: Option<(&[String], &[String])>,
        isolate: bool,
    ) -> sqlx::Result<usize> {
        let mut tx = conn.begin().await?;
        let rows = parked::take_resolved(&mut tx, only, RECONCILE_ROUND).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let taken = rows.len();
        let mut messages: Vec<DecodedMessage> = rows.into_iter().map(unparked_message).collect();
        let refs: Vec<&DecodedMessage> = messages.iter().collect();
        let waiting = take_parked(&mut tx, &self.converter, &refs).await?;
        messages.extend(waiting.messages);
        in_stream_order(&mut messages);
        let view: Vec<&DecodedMessage> = messages.iter().collect();
        let mut rejected: Vec<Quarantined> = Vec::new();
        let changes = self.converter.convert(&view, &|_| true);
        let written = if isolate {
            self.isolate(&mut tx, &view, &mut rejected).await?
        } else {
            stage::write_changes(&mut tx, &changes, &[], false).await?
        };
        parked::insert(&mut tx, &parked_rows(&view, &written.orphans)).await?;
        // Only what Postgres rejects now is new: everything else about these events was recorded when they were
        // first seen.
        quarantine::insert(&mut tx, &quarantine_rows(&view, &rejected)).await?;
        tx.commit().await?;
        self.known.forget(&changes);
        let reasons: Vec<&str> = rejected.iter().map(|q| q.reason.as_str()).collect();
        m::quarantined(&reasons);
        Ok(taken)
    }
}
