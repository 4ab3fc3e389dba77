//! Blob columns (`job_spec`, `error`, `debug`): a zlib stream (RFC 1950), which Lookout decompresses (docs/compatibility.md §5.6).
//! Inputs longer than the threshold are compressed at level 1; shorter ones are stored (level 0), which is still a
//! valid zlib stream.
//!
//! Cost matters here: every job's spec passes through. A stored stream needs no compressor at all (it is framing
//! around the bytes plus a checksum), so it is written directly; compressed streams reuse one compressor per thread
//! instead of building one per blob (a deflate compressor zeroes ~300 KiB of tables when it is created, which was
//! an eighth of the ingester's CPU).

use std::cell::RefCell;

use flate2::{Compress, Compression, FlushCompress, Status};

/// The zlib stream of `data`: compressed at level 1 when longer than `threshold`, else stored.
pub fn zlib(data: &[u8], threshold: usize) -> Vec<u8> {
    if data.len() > threshold { deflated(data) } else { stored(data) }
}

/// Largest stored deflate block (its length field is 16 bits).
const STORED_BLOCK: usize = u16::MAX as usize;

/// A zlib stream of stored (uncompressed) deflate blocks: the 2-byte header of a level-0/1 stream (0x78 0x01, as
/// Armada's writer emits), the blocks (the last one flagged final; an empty input is one empty final block), and
/// the Adler-32 of the data, big-endian.
fn stored(data: &[u8]) -> Vec<u8> {
    let blocks = data.len().div_ceil(STORED_BLOCK).max(1);
    let mut out = Vec::with_capacity(2 + data.len() + 5 * blocks + 4);
    out.extend_from_slice(&[0x78, 0x01]);
    let mut rest = data;
    loop {
        let (block, tail) = rest.split_at(rest.len().min(STORED_BLOCK));
        let len = block.len() as u16;
        out.push(u8::from(tail.is_empty()));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
        if tail.is_empty() {
            break;
        }
        rest = tail;
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

/// Adler-32 (RFC 1950 §8.2), the zlib trailer.
fn adler32(data: &[u8]) -> u32 {
    adler2::adler32_slice(data)
}

thread_local! {
    /// This thread's level-1 zlib compressor, reset before each use.
    static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), true));
}

/// `data` deflated at level 1 in a zlib stream.
fn deflated(data: &[u8]) -> Vec<u8> {
    COMPRESSOR.with_borrow_mut(|c| {
        c.reset();
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        loop {
            let consumed = c.total_in() as usize;
            let status = c
                .compress_vec(&data[consumed..], &mut out, FlushCompress::Finish)
                .expect("deflating into a Vec cannot fail");
            if status == Status::StreamEnd {
                return out;
            }
            // The output is full: make room and go on.
            out.reserve(out.capacity().max(64));
        }
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn unzip(z: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(z).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn small_and_large_inputs_are_zlib_streams() {
        for data in [b"".to_vec(), b"short".to_vec(), vec![b'x'; 5000]] {
            let z = zlib(&data, 1024);
            assert_eq!(z[..2], [0x78, 0x01], "zlib header");
            assert_eq!(unzip(&z), data);
        }
        assert!(zlib(&[b'x'; 5000], 1024).len() < 200, "large input is compressed");
        assert_eq!(zlib(b"short", 1024).len(), 2 + 5 + 5 + 4, "small input is stored");
    }

    #[test]
    fn stored_streams_of_many_blocks_round_trip() {
        // Sizes around the 64 KiB block limit, under a threshold that keeps them stored.
        let data: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for len in [0, 1, 5551, 5552, 5553, 65_534, 65_535, 65_536, 131_070, 131_071, 200_000] {
            let z = zlib(&data[..len], usize::MAX);
            assert_eq!(unzip(&z), data[..len], "length {len}");
        }
    }

    #[test]
    fn adler32_matches_the_checksum_of_a_zlib_decoder() {
        // Known values (RFC 1950's algorithm): "Wikipedia" → 0x11E60398.
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        assert_eq!(adler32(b""), 1);
        // Long runs of 0xff stress the modular reduction.
        let ff = vec![0xffu8; 100_000];
        let z = stored(&ff);
        assert_eq!(unzip(&z), ff, "the decoder verifies the trailer");
        // The trailer equals the one flate2's own encoder writes.
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), Compression::none());
        std::io::Write::write_all(&mut e, &ff).unwrap();
        let theirs = e.finish().unwrap();
        assert_eq!(z[z.len() - 4..], theirs[theirs.len() - 4..]);
    }

    #[test]
    fn the_reused_compressor_gives_independent_streams() {
        let a = vec![b'a'; 10_000];
        let b: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let (za1, zb, za2) = (zlib(&a, 0), zlib(&b, 0), zlib(&a, 0));
        assert_eq!(za1, za2, "same input, same stream, whatever came before");
        assert_eq!(unzip(&za1), a);
        assert_eq!(unzip(&zb), b);
    }
}
