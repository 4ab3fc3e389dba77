//! Decode: a raw message's bytes → an `EventSequence`, as leniently as Armada's own decoder (docs/compatibility.md §2.2).
//!
//! The generated types never fail on invalid UTF-8 or on an unparsable k8s quantity (see `crate::proto`), and
//! unknown fields and oneof arms are skipped, so a message is rejected only when it cannot be used at all: it is
//! not protobuf, or it has no queue, no job set or no events. A rejected message is not dropped: convert turns the
//! rejection into a quarantine record and store keeps the raw bytes.

use std::borrow::Cow;

use prost::Message as _;

use crate::changes::QuarantineReason;
use crate::message::RawMessage;
use crate::proto::armadaevents::{Event, EventKind, EventSequence};

/// Why a message cannot be used.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// The bytes are not an `EventSequence`.
    Undecodable(String),
    EmptyQueue,
    EmptyJobSet,
    NoEvents,
}

impl Rejection {
    /// The reason recorded in the quarantine table and metrics.
    pub fn reason(&self) -> QuarantineReason {
        match self {
            Rejection::Undecodable(_) => QuarantineReason::Undecodable,
            Rejection::EmptyQueue => QuarantineReason::EmptyQueue,
            Rejection::EmptyJobSet => QuarantineReason::EmptyJobSet,
            Rejection::NoEvents => QuarantineReason::NoEvents,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Rejection::Undecodable(e) => format!("not a protobuf armadaevents.EventSequence: {e}"),
            Rejection::EmptyQueue => "EventSequence has an empty queue".into(),
            Rejection::EmptyJobSet => "EventSequence has an empty job_set_name".into(),
            Rejection::NoEvents => "EventSequence has no events".into(),
        }
    }
}

/// A message after decoding.
///
/// Once its batch is converted the decoded form is released ([`DecodedMessage::release`]): a batch's decoded
/// events took more memory than its raw bytes and its row changes together, and the writer needs them only on its
/// slow paths (messages skipped or held back, parked events re-applied, a failure to isolate, a dead letter to
/// record), where [`DecodedMessage::body`] decodes the raw bytes again.
#[derive(Debug, Clone)]
pub struct DecodedMessage {
    pub raw: RawMessage,
    /// Index of the first event within the original message (0, except for a parked event re-applied alone).
    pub event_base: u32,
    body: Body,
}

#[derive(Debug, Clone)]
enum Body {
    Decoded(Result<EventSequence, Rejection>),
    /// Released after conversion; what the writer reads on every batch is kept.
    Released {
        events: usize,
        creates: Creates,
    },
}

/// The ids of the jobs (`SubmitJob`) and runs (`JobRunLeased`) a message creates, as the converter validated them
/// (`Converter::creates`): the writer looks for events parked for them on every batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Creates {
    pub jobs: Vec<String>,
    pub runs: Vec<String>,
}

impl DecodedMessage {
    pub fn new(raw: RawMessage, event_base: u32, body: Result<EventSequence, Rejection>) -> Self {
        DecodedMessage { raw, event_base, body: Body::Decoded(body) }
    }

    /// The decoded sequence, or why the message cannot be used; decoded again from the raw bytes if released.
    pub fn body(&self) -> Cow<'_, Result<EventSequence, Rejection>> {
        match &self.body {
            Body::Decoded(body) => Cow::Borrowed(body),
            Body::Released { .. } => Cow::Owned(decode_body(&self.raw)),
        }
    }

    /// Number of events (0 for a rejected message).
    pub fn event_count(&self) -> usize {
        match &self.body {
            Body::Decoded(body) => body.as_ref().map(|s| s.events.len()).unwrap_or(0),
            Body::Released { events, .. } => *events,
        }
    }

    /// What the message creates, if it was released (else the caller reads [`DecodedMessage::body`]).
    pub fn released_creates(&self) -> Option<&Creates> {
        match &self.body {
            Body::Released { creates, .. } => Some(creates),
            Body::Decoded(_) => None,
        }
    }

    /// Drops the decoded form, keeping the event count and `creates`. Only a usable message read whole from its
    /// source is released: its raw bytes decode to the same sequence again. A rejection (small, and not
    /// re-derivable for a file's trailing bytes) and a parked event re-applied alone keep their body.
    pub fn release(&mut self, creates: Creates) {
        if self.event_base != 0 {
            return;
        }
        if let Body::Decoded(Ok(seq)) = &self.body {
            self.body = Body::Released { events: seq.events.len(), creates };
        }
    }
}

/// Decodes one message. Never fails: an unusable message comes back with a [`Rejection`].
pub fn decode(raw: RawMessage) -> DecodedMessage {
    let body = decode_body(&raw);
    DecodedMessage::new(raw, 0, body)
}

fn decode_body(raw: &RawMessage) -> Result<EventSequence, Rejection> {
    EventSequence::decode(raw.payload.clone()).map_err(|e| Rejection::Undecodable(e.to_string())).and_then(validate)
}

fn validate(seq: EventSequence) -> Result<EventSequence, Rejection> {
    let blank = |b: &[u8]| b.iter().all(|&c| c == 0);
    if blank(&seq.queue) {
        return Err(Rejection::EmptyQueue);
    }
    if blank(&seq.job_set_name) {
        return Err(Rejection::EmptyJobSet);
    }
    if seq.events.is_empty() {
        return Err(Rejection::NoEvents);
    }
    Ok(seq)
}

/// The event's kind, as named in Armada's proto (`submitJob`, `jobRunLeased`, …), or `unknown`.
pub fn event_kind(event: &Event) -> &'static str {
    match &event.event {
        None => "unknown",
        Some(kind) => match kind {
            EventKind::SubmitJob(_) => "submitJob",
            EventKind::ReprioritiseJob(_) => "reprioritiseJob",
            EventKind::ReprioritiseJobSet(_) => "reprioritiseJobSet",
            EventKind::ReprioritisedJob(_) => "reprioritisedJob",
            EventKind::CancelJob(_) => "cancelJob",
            EventKind::CancelJobSet(_) => "cancelJobSet",
            EventKind::CancelledJob(_) => "cancelledJob",
            EventKind::JobSucceeded(_) => "jobSucceeded",
            EventKind::JobErrors(_) => "jobErrors",
            EventKind::JobRunLeased(_) => "jobRunLeased",
            EventKind::JobRunAssigned(_) => "jobRunAssigned",
            EventKind::JobRunRunning(_) => "jobRunRunning",
            EventKind::JobRunSucceeded(_) => "jobRunSucceeded",
            EventKind::JobRunErrors(_) => "jobRunErrors",
            EventKind::StandaloneIngressInfo(_) => "standaloneIngressInfo",
            EventKind::ResourceUtilisation(_) => "resourceUtilisation",
            EventKind::JobRunPreempted(_) => "jobRunPreempted",
            EventKind::PartitionMarker(_) => "partitionMarker",
            EventKind::JobRunPreemptionRequested(_) => "jobRunPreemptionRequested",
            EventKind::JobRequeued(_) => "jobRequeued",
            EventKind::JobPreemptionRequested(_) => "jobPreemptionRequested",
            EventKind::JobRunCancelled(_) => "jobRunCancelled",
            EventKind::JobValidated(_) => "jobValidated",
            EventKind::JobRunTerminatedDebugInfo(_) => "jobRunTerminatedDebugInfo",
        },
    }
}

/// The job and run an event is about, as lossy text (for quarantine and parked records).
pub fn event_keys(event: &Event) -> (Option<String>, Option<String>) {
    let t = |b: &[u8]| Some(crate::proto::text(b).into_owned()).filter(|s| !s.is_empty());
    match &event.event {
        Some(EventKind::SubmitJob(e)) => (t(&e.job_id), None),
        Some(EventKind::ReprioritisedJob(e)) => (t(&e.job_id), None),
        Some(EventKind::CancelledJob(e)) => (t(&e.job_id), None),
        Some(EventKind::JobSucceeded(e)) => (t(&e.job_id), None),
        Some(EventKind::JobErrors(e)) => (t(&e.job_id), None),
        Some(EventKind::JobRequeued(e)) => (t(&e.job_id), None),
        Some(EventKind::JobRunLeased(e)) => (t(&e.job_id), t(&e.run_id)),
        Some(EventKind::JobRunAssigned(e)) => (t(&e.job_id), t(&e.run_id)),
        Some(EventKind::JobRunRunning(e)) => (t(&e.job_id), t(&e.run_id)),
        Some(EventKind::JobRunSucceeded(e)) => (t(&e.job_id), t(&e.run_id)),
        Some(EventKind::JobRunErrors(e)) => (t(&e.job_id), t(&e.run_id)),
        Some(EventKind::StandaloneIngressInfo(e)) => (t(&e.job_id), t(&e.run_id)),
        Some(EventKind::JobRunPreempted(e)) => (t(&e.preempted_job_id), t(&e.preempted_run_id)),
        Some(EventKind::JobRunCancelled(e)) => (t(&e.job_id), t(&e.run_id)),
        Some(EventKind::JobRunTerminatedDebugInfo(e)) => (t(&e.job_id), t(&e.run_id)),
        _ => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{MessageId, Position};
    use crate::proto::armadaevents::Event;

    fn raw(payload: Vec<u8>) -> RawMessage {
        RawMessage {
            position: Position { source: "t".into(), id: MessageId::new(1, 2, 0) },
            entry_size: 1,
            publish_time: 0,
            payload: payload.into(),
        }
    }

    fn seq(queue: &str, jobset: &str, events: usize) -> Vec<u8> {
        EventSequence {
            queue: queue.as_bytes().to_vec().into(),
            job_set_name: jobset.as_bytes().to_vec().into(),
            events: (0..events).map(|_| Event::default()).collect(),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn garbage_is_rejected_not_dropped() {
        let d = decode(raw(vec![0xff, 0xff, 0xff, 0x07]));
        assert_eq!(d.body().into_owned().unwrap_err().reason(), QuarantineReason::Undecodable);
    }

    #[test]
    fn empty_queue_jobset_or_events_are_rejected() {
        assert_eq!(decode(raw(seq("", "js", 1))).body().into_owned().unwrap_err(), Rejection::EmptyQueue);
        assert_eq!(decode(raw(seq("q", "", 1))).body().into_owned().unwrap_err(), Rejection::EmptyJobSet);
        assert_eq!(decode(raw(seq("q", "js", 0))).body().into_owned().unwrap_err(), Rejection::NoEvents);
        assert_eq!(decode(raw(seq("q", "js", 2))).event_count(), 2);
    }

    #[test]
    fn a_released_message_keeps_its_count_and_creates_and_decodes_the_same_again() {
        let mut d = decode(raw(seq("q", "js", 3)));
        let before = d.body().into_owned().unwrap();
        let creates = Creates { jobs: vec!["j".into()], runs: vec!["r".into()] };
        d.release(creates.clone());
        assert!(matches!(d.body, Body::Released { .. }));
        assert_eq!(d.event_count(), 3);
        assert_eq!(d.released_creates(), Some(&creates));
        assert_eq!(d.body().into_owned().unwrap(), before);
    }

    #[test]
    fn rejections_and_parked_events_keep_their_body() {
        let mut rejected = decode(raw(seq("", "js", 1)));
        rejected.release(Creates::default());
        assert!(matches!(rejected.body, Body::Decoded(Err(Rejection::EmptyQueue))));
        // A parked event re-applied alone: its raw bytes are the event, not a sequence.
        let body = decode(raw(seq("q", "js", 1))).body().into_owned();
        let mut parked = DecodedMessage::new(raw(vec![0xff]), 4, body);
        parked.release(Creates::default());
        assert!(matches!(parked.body, Body::Decoded(Ok(_))));
        assert_eq!(parked.released_creates(), None);
    }

    #[test]
    fn invalid_utf8_in_strings_still_decodes() {
        let mut bytes = seq("qq", "js", 1);
        let at = bytes.iter().position(|&b| b == b'q').unwrap();
        bytes[at] = 0xc3; // a lead byte without its continuation
        let d = decode(raw(bytes));
        assert!(d.body().is_ok());
    }
}
