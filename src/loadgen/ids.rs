//! Job and run ids in Armada's forms, drawn from the generator's seeded random source: a job id is a ULID (26
//! Crockford base-32 characters: 48 bits of submit time in milliseconds, then 80 random bits), a run id a UUID v4.

use rand::Rng;

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A ULID for a job submitted at `ms` milliseconds after the Unix epoch.
pub fn job_id<R: Rng>(rng: &mut R, ms: i64) -> String {
    let value: u128 = ((ms as u128 & 0xFFFF_FFFF_FFFF) << 80) | (rng.random::<u128>() >> 48);
    (0..26).rev().map(|i| CROCKFORD[((value >> (i * 5)) & 31) as usize] as char).collect()
}

/// A random (version 4) UUID in its hyphenated lower-case form.
pub fn run_id<R: Rng>(rng: &mut R) -> String {
    let mut v: u128 = rng.random();
    v = (v & !(0xF << 76)) | (0x4 << 76); // version 4
    v = (v & !(0x3 << 62)) | (0x2 << 62); // RFC 4122 variant
    let h = format!("{v:032x}");
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn ids_have_armadas_forms() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let job = job_id(&mut rng, 1_767_225_600_000);
        assert_eq!(job.len(), 26);
        assert!(job.starts_with("01KD"), "{job}"); // 2026 in ULID time
        let run = run_id(&mut rng);
        assert_eq!(run.len(), 36);
        assert_eq!(&run[14..15], "4", "{run}");
        assert!(matches!(&run[19..20], "8" | "9" | "a" | "b"), "{run}");
    }
}
