//! Blob columns (`job_spec`, `error`, `debug`): a zlib stream (RFC 1950), which Lookout decompresses (docs/compatibility.md §5.6).
//! Inputs longer than the threshold are compressed at level 1; shorter ones are stored (level 0), which is still a
//! valid zlib stream.

use std::io::Write;

use flate2::Compression;
use flate2::write::ZlibEncoder;

pub fn zlib(data: &[u8], threshold: usize) -> Vec<u8> {
    let level = if data.len() > threshold { Compression::fast() } else { Compression::none() };
    let mut encoder = ZlibEncoder::new(Vec::with_capacity(data.len() / 2 + 16), level);
    encoder.write_all(data).expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
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
            assert_eq!(z[0], 0x78, "zlib header");
            assert_eq!(unzip(&z), data);
        }
        assert!(zlib(&[b'x'; 5000], 1024).len() < 200, "large input is compressed");
        assert!(zlib(b"short", 1024).len() > 5, "small input is stored");
    }
}
