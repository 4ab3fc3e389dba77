//! Convert: decoded messages → [`RowChanges`], one small file per event kind (docs/compatibility.md §5).
//!
//! For each event this module works out the context every kind needs (queue, job set, owner, event time — spec
//! §5.1), validates the ids, and hands the event to its kind's `fold` function, which records row creations and
//! folds updates into the job's or run's delta (`crate::changes`). Conversion is pure and deterministic: the same
//! messages always give the same changes.

mod annotations;
mod blob;
mod job_spec;
mod pod_quantities;
pub mod quantity;
mod resources;
mod text;

mod cancelled_job;
mod job_errors;
mod job_requeued;
mod job_run_assigned;
mod job_run_cancelled;
mod job_run_errors;
mod job_run_leased;
mod job_run_preempted;
mod job_run_running;
mod job_run_succeeded;
mod job_run_terminated_debug_info;
mod job_succeeded;
mod reprioritised_job;
mod standalone_ingress_info;
mod submit_job;

use crate::batch::Batch;
use crate::changes::{QuarantineReason, Quarantined, RowChanges};
use crate::config::Config;
use crate::decode::{Creates, DecodedMessage};
use crate::message::{EventId, Ts, ts_from_parts};
use crate::proto::armadaevents::{Event, EventKind, EventSequence};

pub use text::Fixer;
// Where they lived before the decode stage owned them; kept so callers keep compiling.
pub use crate::decode::{event_keys, event_kind};

/// Column limits (characters) of the values every kind uses (docs/compatibility.md §5.1).
pub mod limits {
    pub const JOB_ID: usize = 32;
    pub const RUN_ID: usize = 36;
    pub const QUEUE: usize = 512;
    pub const JOBSET: usize = 1024;
    pub const OWNER: usize = 512;
    pub const NAMESPACE: usize = 512;
    pub const EXTERNAL_URI: usize = 1024;
    pub const PRIORITY_CLASS: usize = 63;
    pub const ANNOTATION: usize = 1024;
    pub const CLUSTER: usize = 512;
    pub const NODE: usize = 512;
    pub const CANCEL_REASON: usize = 512;
    pub const CANCEL_USER: usize = 512;
    pub const CATEGORY: usize = 63;
    pub const FAILURE_REASON: usize = 63;
    pub const RETRY_POLICY: usize = 512;
    /// Our own `job.ingester_failure_message` is `text`; this keeps a runaway message from bloating the row.
    pub const FAILURE_MESSAGE: usize = 16_384;
}

/// Settings that change how events become rows.
#[derive(Debug, Clone)]
pub struct Converter {
    /// Prefix stripped from annotation keys.
    pub annotation_prefix: Option<String>,
    /// Lower-cased annotation keys never stored.
    pub annotation_blocklist: Vec<String>,
    /// Blobs longer than this are compressed at level 1, shorter ones stored (still a zlib stream).
    pub compression_threshold: usize,
    /// Derive a failure category for terminal run errors that carry none (`analytics.classify_failures`).
    pub classify_failures: bool,
}

impl Default for Converter {
    fn default() -> Self {
        Converter {
            annotation_prefix: Some("armadaproject.io/".into()),
            annotation_blocklist: Vec::new(),
            compression_threshold: 1024,
            classify_failures: false,
        }
    }
}

/// What every event kind gets: where it came from, when it happened, and its sequence's context.
pub struct Ctx<'a> {
    pub id: EventId,
    /// The event's `created` time, or the message's publish time when missing.
    pub ts: Ts,
    pub queue: &'a str,
    pub jobset: &'a str,
    pub owner: &'a str,
    pub conv: &'a Converter,
    pub fx: Fixer,
}

impl Ctx<'_> {
    /// Validates a job id; on failure the event is quarantined and the kind does nothing.
    pub fn job_id(&mut self, out: &mut RowChanges, bytes: &[u8], kind: &'static str) -> Option<String> {
        self.valid_id(out, bytes, limits::JOB_ID, "job_id", kind).inspect(|id| self.fx.job_id = Some(id.clone()))
    }

    /// Validates a run id; on failure the event is quarantined and the kind does nothing.
    pub fn run_id(&mut self, out: &mut RowChanges, bytes: &[u8], kind: &'static str) -> Option<String> {
        self.valid_id(out, bytes, limits::RUN_ID, "run_id", kind).inspect(|id| self.fx.run_id = Some(id.clone()))
    }

    fn valid_id(
        &mut self,
        out: &mut RowChanges,
        bytes: &[u8],
        limit: usize,
        what: &str,
        kind: &'static str,
    ) -> Option<String> {
        match text::id(bytes, limit, what) {
            Ok(id) => Some(id),
            Err(error) => {
                out.quarantined.push(Quarantined {
                    message: self.id.message,
                    event: Some(self.id.event),
                    reason: QuarantineReason::InvalidId,
                    error,
                    sqlstate: None,
                    event_kind: Some(kind),
                    job_id: self.fx.job_id.clone(),
                    run_id: None,
                });
                None
            }
        }
    }

    /// Zlib stream of a value for a `bytea` blob column (docs/compatibility.md §5.6). Blobs hold the producer's bytes untouched:
    /// `bytea` takes NUL and any byte, and Lookout shows them as text itself.
    pub fn blob(&self, data: &[u8]) -> Vec<u8> {
        blob::zlib(data, self.conv.compression_threshold)
    }

    /// [`Ctx::blob`], or `None` for an empty value ("no value", docs/compatibility.md D9).
    pub fn blob_opt(&self, data: &[u8]) -> Option<Vec<u8>> {
        (!data.is_empty()).then(|| self.blob(data))
    }
}

impl Converter {
    pub fn from_config(config: &Config) -> Self {
        Converter {
            annotation_prefix: config.annotation_prefix().map(str::to_string),
            annotation_blocklist: config.annotations.blocklist_annotations.iter().map(|k| k.to_lowercase()).collect(),
            compression_threshold: config.min_job_spec_compression_size,
            classify_failures: config.analytics.classify_failures,
        }
    }

    /// Converts the events of `messages` for which `include` is true, in order. `EventId.message` indexes
    /// `messages`; `EventId.event` indexes the message's events. The changes come back in key order.
    pub fn convert(&self, messages: &[&DecodedMessage], include: &dyn Fn(EventId) -> bool) -> RowChanges {
        let mut out = RowChanges::default();
        for (mi, msg) in messages.iter().enumerate() {
            let mi = mi as u32;
            // The first included event, found before reading the body: a released message none of whose events
            // is wanted (a part during isolation) is not decoded again. A rejection has no events and goes on.
            let first = (0..msg.event_count() as u32).find(|&e| include(EventId { message: mi, event: e }));
            if first.is_none() && msg.event_count() > 0 {
                continue;
            }
            let body = msg.body();
            let seq = match body.as_ref() {
                Ok(seq) => seq,
                Err(rejection) => {
                    out.quarantined.push(Quarantined {
                        message: mi,
                        event: None,
                        reason: rejection.reason(),
                        error: rejection.message(),
                        sqlstate: None,
                        event_kind: None,
                        job_id: None,
                        run_id: None,
                    });
                    continue;
                }
            };
            // The sequence's context, fitted once; fixes are recorded against its first included event.
            let Some(first) = first else { continue };
            let mut fx = Fixer::new(EventId { message: mi, event: first });
            let queue = fx.fit(&seq.queue, Some(limits::QUEUE), "job.queue");
            let jobset = fx.fit(&seq.job_set_name, Some(limits::JOBSET), "job.jobset");
            let owner = fx.fit(&seq.user_id, Some(limits::OWNER), "job.owner").trim().to_string();
            out.sanitized.append(&mut fx.fixes);
            for (ei, event) in seq.events.iter().enumerate() {
                let id = EventId { message: mi, event: ei as u32 };
                if !include(id) {
                    continue;
                }
                let ts = event
                    .created
                    .as_ref()
                    .and_then(|t| ts_from_parts(t.seconds, t.nanos))
                    .unwrap_or(msg.raw.publish_time);
                let mut ctx =
                    Ctx { id, ts, queue: &queue, jobset: &jobset, owner: &owner, conv: self, fx: Fixer::new(id) };
                fold_event(&mut ctx, event, &mut out);
                out.sanitized.append(&mut ctx.fx.fixes);
            }
        }
        out.sort();
        out
    }

    /// The convert stage: fills a batch's row changes from its messages, then releases their decoded form (see
    /// [`DecodedMessage`]; the writer decodes a message again only on its slow paths).
    pub fn convert_batch(&self, mut batch: Batch) -> Batch {
        let refs: Vec<&DecodedMessage> = batch.messages.iter().collect();
        batch.changes = self.convert(&refs, &|_| true);
        for msg in &mut batch.messages {
            let creates = match msg.body().as_ref() {
                Ok(seq) => self.creates(seq),
                Err(_) => continue,
            };
            msg.release(creates);
        }
        batch
    }

    /// Ids of the jobs (`SubmitJob`) and runs (`JobRunLeased`) these messages create, for finding parked events;
    /// each sorted and once.
    pub fn created_ids(&self, messages: &[&DecodedMessage]) -> (Vec<String>, Vec<String>) {
        let (mut jobs, mut runs) = (Vec::new(), Vec::new());
        for msg in messages {
            if let Some(kept) = msg.released_creates() {
                jobs.extend_from_slice(&kept.jobs);
                runs.extend_from_slice(&kept.runs);
            } else if let Ok(seq) = msg.body().as_ref() {
                let creates = self.creates(seq);
                jobs.extend(creates.jobs);
                runs.extend(creates.runs);
            }
        }
        jobs.sort();
        jobs.dedup();
        runs.sort();
        runs.dedup();
        (jobs, runs)
    }

    /// The valid ids of the jobs and runs one sequence creates.
    fn creates(&self, seq: &EventSequence) -> Creates {
        let mut out = Creates::default();
        for event in &seq.events {
            match &event.event {
                Some(EventKind::SubmitJob(s)) => {
                    if let Ok(id) = text::id(&s.job_id, limits::JOB_ID, "job_id") {
                        out.jobs.push(id);
                    }
                }
                Some(EventKind::JobRunLeased(l)) => {
                    if let Ok(id) = text::id(&l.run_id, limits::RUN_ID, "run_id") {
                        out.runs.push(id);
                    }
                }
                _ => {}
            }
        }
        out
    }
}

fn fold_event(ctx: &mut Ctx<'_>, event: &Event, out: &mut RowChanges) {
    let Some(kind) = &event.event else {
        out.ignore("unknown");
        return;
    };
    match kind {
        EventKind::SubmitJob(e) => submit_job::fold(ctx, e, out),
        EventKind::ReprioritisedJob(e) => reprioritised_job::fold(ctx, e, out),
        EventKind::CancelledJob(e) => cancelled_job::fold(ctx, e, out),
        EventKind::JobSucceeded(e) => job_succeeded::fold(ctx, e, out),
        EventKind::JobErrors(e) => job_errors::fold(ctx, e, out),
        EventKind::JobRunLeased(e) => job_run_leased::fold(ctx, e, out),
        EventKind::JobRunAssigned(e) => job_run_assigned::fold(ctx, e, out),
        EventKind::JobRunRunning(e) => job_run_running::fold(ctx, e, out),
        EventKind::JobRunSucceeded(e) => job_run_succeeded::fold(ctx, e, out),
        EventKind::JobRunErrors(e) => job_run_errors::fold(ctx, e, out),
        EventKind::StandaloneIngressInfo(e) => standalone_ingress_info::fold(ctx, e, out),
        EventKind::JobRunPreempted(e) => job_run_preempted::fold(ctx, e, out),
        EventKind::JobRequeued(e) => job_requeued::fold(ctx, e, out),
        EventKind::JobRunCancelled(e) => job_run_cancelled::fold(ctx, e, out),
        EventKind::JobRunTerminatedDebugInfo(e) => job_run_terminated_debug_info::fold(ctx, e, out),
        // Requests and notices the Lookout schema has no column for (docs/compatibility.md §5.2): counted, not logged.
        EventKind::ReprioritiseJob(_)
        | EventKind::ReprioritiseJobSet(_)
        | EventKind::CancelJob(_)
        | EventKind::CancelJobSet(_)
        | EventKind::ResourceUtilisation(_)
        | EventKind::PartitionMarker(_)
        | EventKind::JobRunPreemptionRequested(_)
        | EventKind::JobPreemptionRequested(_)
        | EventKind::JobValidated(_) => out.ignore(event_kind(event)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::decode::decode;
    use crate::loadgen::{DEFAULT_START, Profile, Size, Spec, generate};
    use crate::message::{MessageId, Position, RawMessage};

    /// A generated stream (submits, leases, failures, cancels…) as one batch of decoded messages.
    fn stream_batch() -> Batch {
        let spec = Spec { profile: Profile::Long, size: Size::Jobs(300), seed: 7, start: DEFAULT_START };
        let messages = generate(&spec)
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                decode(RawMessage {
                    position: Position { source: Arc::from("t"), id: MessageId::new(1, i as i64, 0) },
                    entry_size: 1,
                    publish_time: 0,
                    payload: m.payload.into(),
                })
            })
            .collect();
        Batch::new(messages)
    }

    #[test]
    fn converted_changes_come_in_key_order() {
        let batch = stream_batch();
        let refs: Vec<&DecodedMessage> = batch.messages.iter().collect();
        let changes = Converter::default().convert(&refs, &|_| true);
        fn sorted<'a>(keys: impl Iterator<Item = &'a String>) -> bool {
            let keys: Vec<&String> = keys.collect();
            keys.len() > 1 && keys.windows(2).all(|w| w[0] < w[1])
        }
        assert!(sorted(changes.jobs.keys()) && sorted(changes.job_specs.keys()) && sorted(changes.runs.keys()));
        assert!(sorted(changes.job_updates.keys()) && sorted(changes.run_updates.keys()));
    }

    #[test]
    fn a_converted_batch_releases_its_bodies_and_the_writer_gets_the_same_answers_from_it() {
        let converter = Converter::default();
        let fresh = stream_batch();
        let fresh_refs: Vec<&DecodedMessage> = fresh.messages.iter().collect();
        let expected_ids = converter.created_ids(&fresh_refs);
        let expected = converter.convert(&fresh_refs, &|_| true);
        assert!(!expected_ids.0.is_empty() && !expected_ids.1.is_empty(), "the stream creates jobs and runs");

        let converted = converter.convert_batch(stream_batch());
        assert_eq!(converted.changes, expected);
        let refs: Vec<&DecodedMessage> = converted.messages.iter().collect();
        assert!(refs.iter().all(|m| m.released_creates().is_some()), "every usable message is released");
        assert_eq!(
            refs.iter().map(|m| m.event_count()).sum::<usize>(),
            fresh.messages.iter().map(|m| m.event_count()).sum::<usize>()
        );
        // The writer's every-batch question, from what was kept; and its slow path, which decodes again.
        assert_eq!(converter.created_ids(&refs), expected_ids);
        assert_eq!(converter.convert(&refs, &|_| true), expected);
    }
}
