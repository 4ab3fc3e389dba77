//! Isolation by bisection: when Postgres rejects a batch's data, apply it in parts under savepoints, halving a
//! part that fails, until the single events it rejects are found. Those are quarantined; the rest commits.

use std::collections::BTreeSet;

use sqlx::PgConnection;

use super::Writer;
use crate::changes::{QuarantineReason, Quarantined};
use crate::decode::DecodedMessage;
use crate::message::EventId;
use crate::store::stage::{self, Written};
use crate::store::{ErrorClass, classify, sqlstate};

impl Writer {
    /// Applies the messages event group by event group, under savepoints, halving on data errors, and returns what
    /// applied; events Postgres rejects on their own are added to `rejected`.
    pub(super) async fn isolate(
        &self,
        conn: &mut PgConnection,
        view: &[&DecodedMessage],
        rejected: &mut Vec<Quarantined>,
    ) -> sqlx::Result<Written> {
        // If the statements fail even with nothing staged, the schema is broken, not the data: no event is to
        // blame, so fail the attempt (it is retried with backoff) instead of quarantining everything.
        stage::probe(&mut *conn).await?;

        let units: Vec<EventId> = view
            .iter()
            .enumerate()
            .flat_map(|(i, msg)| (0..msg.event_count()).map(move |e| EventId { message: i as u32, event: e as u32 }))
            .collect();
        let mut total = Written::default();
        // Ranges of `units` still to apply, processed in order (the stack's top is the earliest range).
        let mut pending: Vec<(usize, usize)> = vec![(0, units.len())];
        while let Some((lo, hi)) = pending.pop() {
            if lo >= hi {
                continue;
            }
            let wanted: BTreeSet<EventId> = units[lo..hi].iter().copied().collect();
            let part = self.converter.convert(view, &|id| wanted.contains(&id));
            match stage::write_part(&mut *conn, &part).await {
                Ok(written) => {
                    total.rows.extend(written.rows);
                    total.orphans.extend(written.orphans);
                }
                Err(e) if classify(&e) == ErrorClass::Data => {
                    if hi - lo == 1 {
                        let id = units[lo];
                        tracing::warn!(error = %e, "quarantining an event Postgres rejects");
                        let db = e.as_database_error().map(|d| d.message().to_string()).unwrap_or(e.to_string());
                        rejected.push(Quarantined {
                            message: id.message,
                            event: Some(id.event),
                            reason: QuarantineReason::DbRejected,
                            error: db,
                            sqlstate: sqlstate(&e),
                            event_kind: None,
                            job_id: None,
                            run_id: None,
                        });
                    } else {
                        let mid = lo + (hi - lo) / 2;
                        pending.push((mid, hi));
                        pending.push((lo, mid));
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }
}
