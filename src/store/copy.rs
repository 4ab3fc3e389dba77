//! Binary COPY encoding (`COPY … FROM STDIN (FORMAT binary)`) for the staging tables.
//!
//! Format: an 11-byte signature, flags and header-extension length, then per row a field count (i16) and per field
//! a length (i32, -1 for NULL) and the value in the type's binary send format, then a trailer of -1 (i16). Each
//! writer method must match the staging column's type exactly; Postgres rejects a mismatch instead of casting.

use crate::message::Ts;

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Microseconds between the Unix epoch and Postgres' epoch (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// Builds one binary COPY payload in memory.
pub struct CopyWriter {
    buf: Vec<u8>,
    columns: i16,
    fields_in_row: i16,
    rows: usize,
}

impl CopyWriter {
    pub fn new(columns: i16) -> Self {
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(SIGNATURE);
        buf.extend_from_slice(&0i32.to_be_bytes());
        buf.extend_from_slice(&0i32.to_be_bytes());
        CopyWriter { buf, columns, fields_in_row: columns, rows: 0 }
    }

    /// Starts a row; the previous row must be complete.
    pub fn row(&mut self) -> &mut Self {
        assert_eq!(self.fields_in_row, self.columns, "previous COPY row is incomplete");
        self.buf.extend_from_slice(&self.columns.to_be_bytes());
        self.fields_in_row = 0;
        self.rows += 1;
        self
    }

    fn field(&mut self, bytes: Option<&[u8]>) -> &mut Self {
        assert!(self.fields_in_row < self.columns, "too many fields in COPY row");
        self.fields_in_row += 1;
        match bytes {
            None => self.buf.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(b) => {
                let len = i32::try_from(b.len()).expect("COPY field larger than 2 GiB");
                self.buf.extend_from_slice(&len.to_be_bytes());
                self.buf.extend_from_slice(b);
            }
        }
        self
    }

    /// `text` / `varchar`.
    pub fn text(&mut self, v: &str) -> &mut Self {
        self.field(Some(v.as_bytes()))
    }

    pub fn opt_text(&mut self, v: Option<&str>) -> &mut Self {
        self.field(v.map(str::as_bytes))
    }

    /// `bytea`.
    pub fn opt_bytes(&mut self, v: Option<&[u8]>) -> &mut Self {
        self.field(v)
    }

    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.field(Some(v))
    }

    /// `smallint`.
    pub fn int2(&mut self, v: i16) -> &mut Self {
        self.field(Some(&v.to_be_bytes()))
    }

    pub fn opt_int2(&mut self, v: Option<i16>) -> &mut Self {
        match v {
            Some(v) => self.int2(v),
            None => self.field(None),
        }
    }

    /// `integer`.
    pub fn opt_int4(&mut self, v: Option<i32>) -> &mut Self {
        match v {
            Some(v) => self.field(Some(&v.to_be_bytes())),
            None => self.field(None),
        }
    }

    /// `bigint`.
    pub fn int8(&mut self, v: i64) -> &mut Self {
        self.field(Some(&v.to_be_bytes()))
    }

    pub fn opt_int8(&mut self, v: Option<i64>) -> &mut Self {
        match v {
            Some(v) => self.int8(v),
            None => self.field(None),
        }
    }

    /// `timestamp` (without time zone): microseconds since 2000-01-01.
    pub fn ts(&mut self, v: Ts) -> &mut Self {
        self.int8(v - PG_EPOCH_OFFSET_MICROS)
    }

    pub fn opt_ts(&mut self, v: Option<Ts>) -> &mut Self {
        match v {
            Some(v) => self.ts(v),
            None => self.field(None),
        }
    }

    /// `jsonb`: version byte 1, then the JSON text.
    pub fn opt_jsonb(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            Some(json) => {
                assert!(self.fields_in_row < self.columns, "too many fields in COPY row");
                self.fields_in_row += 1;
                let len = i32::try_from(json.len() + 1).expect("COPY field larger than 2 GiB");
                self.buf.extend_from_slice(&len.to_be_bytes());
                self.buf.push(1);
                self.buf.extend_from_slice(json.as_bytes());
                self
            }
            None => self.field(None),
        }
    }

    /// Fields per row.
    pub fn columns(&self) -> i16 {
        self.columns
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The finished payload, with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        assert_eq!(self.fields_in_row, self.columns, "last COPY row is incomplete");
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_header_rows_and_trailer() {
        let mut w = CopyWriter::new(3);
        w.row().text("ab").opt_int2(None).ts(PG_EPOCH_OFFSET_MICROS + 1);
        assert_eq!(w.rows(), 1);
        let out = w.finish();
        let mut expected = Vec::new();
        expected.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0, 3]);
        expected.extend_from_slice(&[0, 0, 0, 2, b'a', b'b']);
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        expected.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1]);
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(out, expected);
    }

    #[test]
    #[should_panic(expected = "incomplete")]
    fn incomplete_row_is_a_bug() {
        let mut w = CopyWriter::new(2);
        w.row().text("x");
        let _ = w.finish();
    }
}
