//! Records: the rows of the ingester's own tables (parked events, dead letters, sanitized values), built from the
//! messages they came from, and parked rows turned back into messages. This is where protobuf is re-encoded.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

use prost::Message as _;

use crate::changes::{Quarantined, Sanitized};
use crate::decode::{DecodedMessage, Rejection, event_keys, event_kind};
use crate::message::{EventId, MessageId, Position, RawMessage};
use crate::proto::armadaevents::EventSequence;
use crate::proto::armadaevents::event_sequence::Event;
use crate::store::parked::WaitsFor;
use crate::store::{parked, quarantine, sanitized};

/// Sorts messages back into the order they had in the stream.
pub(super) fn in_stream_order(messages: &mut [DecodedMessage]) {
    messages.sort_by(|a, b| (&a.raw.position, a.event_base).cmp(&(&b.raw.position, b.event_base)));
}

/// Rebuilds a single-event message from a parked row.
pub(super) fn unparked_message(row: parked::Row) -> DecodedMessage {
    let position = Position {
        source: row.source.as_str().into(),
        id: MessageId::new(row.ledger_id, row.entry_id, row.batch_index),
    };
    let publish_time = row.publish_time.map(|t| t.timestamp_micros()).unwrap_or(0);
    let body = match Event::decode(row.event.as_slice()) {
        Ok(event) => Ok(EventSequence {
            queue: row.queue.into_bytes().into(),
            job_set_name: row.jobset.into_bytes().into(),
            user_id: row.user_id.into_bytes().into(),
            groups: Vec::new(),
            events: vec![event],
        }),
        Err(e) => Err(Rejection::Undecodable(format!("parked event no longer decodes: {e}"))),
    };
    DecodedMessage::new(
        RawMessage { position, entry_size: 1, publish_time, payload: row.event.into() },
        row.event_index as u32,
        body,
    )
}

/// The bodies of a view's messages, each read once however many of its events need a record (a message released
/// after conversion is decoded again: once, not once per event).
struct Bodies<'a> {
    view: &'a [&'a DecodedMessage],
    read: HashMap<u32, Cow<'a, Result<EventSequence, Rejection>>>,
}

impl<'a> Bodies<'a> {
    fn new(view: &'a [&'a DecodedMessage]) -> Self {
        Bodies { view, read: HashMap::new() }
    }

    fn get(&mut self, message: u32) -> Option<&EventSequence> {
        let view = self.view;
        let body: &Cow<'a, _> = self.read.entry(message).or_insert_with(|| view[message as usize].body());
        (**body).as_ref().ok()
    }
}

/// Parked-event rows for the given events (each event once, first reason wins).
pub(super) fn parked_rows(view: &[&DecodedMessage], orphans: &[(EventId, WaitsFor)]) -> Vec<parked::Row> {
    let mut seen = BTreeSet::new();
    let mut bodies = Bodies::new(view);
    let mut rows = Vec::new();
    for (id, waits_for) in orphans {
        if !seen.insert(*id) {
            continue;
        }
        let msg = view[id.message as usize];
        let Some(seq) = bodies.get(id.message) else { continue };
        let Some(event) = seq.events.get(id.event as usize) else { continue };
        let (job_id, run_id) = event_keys(event);
        let p = &msg.raw.position;
        rows.push(parked::Row {
            source: p.source.to_string(),
            ledger_id: p.id.ledger,
            entry_id: p.id.entry,
            batch_index: p.id.batch_index,
            event_index: (msg.event_base + id.event) as i32,
            publish_time: chrono::DateTime::from_timestamp_micros(msg.raw.publish_time),
            waits_for: waits_for.as_str().to_string(),
            job_id: strip_nul(&job_id.unwrap_or_default()),
            run_id: run_id.as_deref().map(strip_nul),
            event_kind: event_kind(event).to_string(),
            queue: strip_nul(&String::from_utf8_lossy(&seq.queue)),
            jobset: strip_nul(&String::from_utf8_lossy(&seq.job_set_name)),
            user_id: strip_nul(&String::from_utf8_lossy(&seq.user_id)),
            event: event.encode_to_vec(),
        });
    }
    rows
}

/// The quarantine rows for messages (`event` None) or their events, in the order given.
pub(super) fn quarantine_rows<'q>(
    view: &[&DecodedMessage],
    dead: impl IntoIterator<Item = &'q Quarantined>,
) -> Vec<quarantine::Row> {
    let mut bodies = Bodies::new(view);
    dead.into_iter().map(|q| quarantine_row(view[q.message as usize], bodies.get(q.message), q)).collect()
}

/// The quarantine row for a message (`event` None) or one of its events. An event's payload is that event alone,
/// re-encoded as an `EventSequence` with the message's queue, job set, user and groups.
fn quarantine_row(msg: &DecodedMessage, seq: Option<&EventSequence>, q: &Quarantined) -> quarantine::Row {
    let p = &msg.raw.position;
    let text = |b: &[u8]| strip_nul(&String::from_utf8_lossy(b));
    let mut row = quarantine::Row {
        source: p.source.to_string(),
        ledger_id: p.id.ledger,
        entry_id: p.id.entry,
        batch_index: p.id.batch_index,
        event_index: q.event.map(|e| (msg.event_base + e) as i32),
        publish_time: chrono::DateTime::from_timestamp_micros(msg.raw.publish_time),
        reason: q.reason.as_str().to_string(),
        error: strip_nul(&q.error),
        sqlstate: q.sqlstate.clone(),
        event_kind: q.event_kind.map(str::to_string),
        queue: seq.map(|s| text(&s.queue)),
        jobset: seq.map(|s| text(&s.job_set_name)),
        job_id: q.job_id.as_deref().map(strip_nul),
        run_id: q.run_id.as_deref().map(strip_nul),
        payload: msg.raw.payload.to_vec(),
    };
    if let (Some(seq), Some(e)) = (seq, q.event)
        && let Some(event) = seq.events.get(e as usize)
    {
        let (job_id, run_id) = event_keys(event);
        row.job_id = row.job_id.or(job_id.as_deref().map(strip_nul));
        row.run_id = row.run_id.or(run_id.as_deref().map(strip_nul));
        row.event_kind = row.event_kind.or(Some(event_kind(event).to_string()));
        row.payload = EventSequence {
            queue: seq.queue.clone(),
            job_set_name: seq.job_set_name.clone(),
            user_id: seq.user_id.clone(),
            groups: seq.groups.clone(),
            events: vec![event.clone()],
        }
        .encode_to_vec();
    }
    row
}

/// The rows recording sanitized values, at their events' positions.
pub(super) fn sanitized_rows(view: &[&DecodedMessage], fixes: &[&Sanitized]) -> Vec<sanitized::Row> {
    fixes
        .iter()
        .map(|s| {
            let msg = view[s.source.message as usize];
            let p = &msg.raw.position;
            sanitized::Row {
                source: p.source.to_string(),
                ledger_id: p.id.ledger,
                entry_id: p.id.entry,
                batch_index: p.id.batch_index,
                event_index: (msg.event_base + s.source.event) as i32,
                job_id: s.job_id.as_deref().map(strip_nul),
                run_id: s.run_id.as_deref().map(strip_nul),
                field: s.field.to_string(),
                fix: s.fix.to_string(),
                original: s.original.clone(),
            }
        })
        .collect()
}

/// Postgres text cannot hold U+0000.
fn strip_nul(s: &str) -> String {
    s.replace('\0', "")
}
