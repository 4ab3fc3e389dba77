//! `lookout-ingester apply FILE…`: decode → convert → store over recorded messages, without Pulsar.
//!
//! A file holds protobuf's standard delimited form: each record is a varint length followed by one serialized
//! `EventSequence` (one Pulsar message payload). Records become messages whose position is `file:<path>` and the
//! record number. A record that does not decode is quarantined like any other message; a file cut short, or a
//! length that is not a varint, quarantines the remaining bytes as one record. Positions are not tracked: applying a
//! file twice is harmless because every write is idempotent.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::batch::{Builder, Limits};
use crate::decode::{DecodedMessage, Rejection, decode};
use crate::message::{MessageId, Position, RawMessage};
use crate::states::RowsWritten;
use crate::writer::{WriteReport, Writer};

/// Totals over every file applied.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub files: usize,
    pub messages: usize,
    pub events: usize,
    pub batches: usize,
    pub rows: Vec<RowsWritten>,
    pub quarantined: u64,
    pub sanitized: u64,
    pub parked: u64,
    pub unparked: usize,
}

impl Summary {
    fn add(&mut self, report: &WriteReport) {
        self.batches += 1;
        for r in &report.rows {
            match self.rows.iter_mut().find(|t| (t.table, t.operation) == (r.table, r.operation)) {
                Some(total) => total.rows += r.rows,
                None => self.rows.push(*r),
            }
        }
        self.quarantined += report.quarantined;
        self.sanitized += report.sanitized;
        self.parked += report.parked;
        self.unparked += report.unparked;
    }

    /// A few lines for the terminal.
    pub fn render(&self) -> String {
        let mut s = format!(
            "applied {} file(s): {} message(s), {} event(s) in {} batch(es)\n",
            self.files, self.messages, self.events, self.batches
        );
        let mut rows: Vec<_> = self.rows.iter().map(RowsWritten::labels).collect();
        rows.sort();
        for (table, op, n) in rows {
            s.push_str(&format!("  {table:<10} {op:<7} {n} row(s)\n"));
        }
        s.push_str(&format!(
            "  quarantined {} | sanitized values {} | parked {} | re-applied from parked {}\n",
            self.quarantined, self.sanitized, self.parked, self.unparked
        ));
        s
    }
}

/// Splits a delimited file into records. A malformed tail becomes one last `Err` record holding its bytes.
pub fn records(data: &Bytes) -> Vec<Result<Bytes, Bytes>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        match read_varint(&data[at..]) {
            Some((len, used)) if (len as usize) <= data.len() - at - used => {
                let start = at + used;
                out.push(Ok(data.slice(start..start + len as usize)));
                at = start + len as usize;
            }
            _ => {
                out.push(Err(data.slice(at..)));
                break;
            }
        }
    }
    out
}

fn read_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in buf.iter().take(10).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Applies the files in order, in batches of at most `max_events` events.
pub async fn apply_files(store: &Writer, files: &[impl AsRef<Path>], max_events: usize) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    let limits = Limits { max_events, max_bytes: 64 * 1024 * 1024, max_wait: std::time::Duration::MAX / 4 };
    let cancel = CancellationToken::new();
    for file in files {
        let path = file.as_ref();
        let data = Bytes::from(tokio::fs::read(path).await.with_context(|| format!("cannot read {}", path.display()))?);
        let source: Arc<str> = format!("file:{}", path.display()).into();
        let publish_time = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        summary.files += 1;
        let mut builder = Builder::new(limits);
        for (index, record) in records(&data).into_iter().enumerate() {
            let position = Position { source: source.clone(), id: MessageId::new(0, index as i64, 0) };
            let msg = match record {
                Ok(payload) => decode(RawMessage { position, entry_size: 1, publish_time, payload }),
                Err(rest) => DecodedMessage::new(
                    RawMessage { position, entry_size: 1, publish_time, payload: rest.clone() },
                    0,
                    Err(Rejection::Undecodable(format!(
                        "record {index}: {} trailing byte(s) are not a length-delimited record",
                        rest.len()
                    ))),
                ),
            };
            summary.messages += 1;
            summary.events += msg.event_count();
            builder.push(msg);
            if builder.is_full() {
                let batch = store.converter().convert_batch(builder.take());
                summary.add(&store.write(&batch, &cancel).await?);
            }
        }
        if !builder.is_empty() {
            let batch = store.converter().convert_batch(builder.take());
            summary.add(&store.write(&batch, &cancel).await?);
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_delimited_records_and_keeps_a_bad_tail() {
        let data = Bytes::from(vec![2, b'a', b'b', 0, 1, b'c', 5, b'x']);
        let recs = records(&data);
        assert_eq!(recs.len(), 4);
        assert_eq!(recs[0].as_ref().unwrap().as_ref(), b"ab");
        assert_eq!(recs[1].as_ref().unwrap().len(), 0);
        assert_eq!(recs[2].as_ref().unwrap().as_ref(), b"c");
        assert_eq!(recs[3].as_ref().unwrap_err().as_ref(), &[5, b'x']);
    }

    #[test]
    fn multi_byte_varints() {
        let mut data = vec![0xac, 0x02];
        data.extend(vec![7u8; 300]);
        let recs = records(&Bytes::from(data));
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].as_ref().unwrap().len(), 300);
    }
}
