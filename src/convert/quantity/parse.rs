//! Parsing a quantity exactly as Go's `resource.ParseQuantity` does: the grammar (`parseQuantityString`), the
//! suffix (binary `Ki`…`Ei`, decimal `n`…`E`, or an exponent `e3`/`E-2`, which wraps to 32 bits), the int64 fast
//! path that keeps the text of a value it deems canonical (`"+1Gi"`, `"01"`, `"1E3"`, `"1."`), and the general path:
//! non-zero values rounded away from zero to a multiple of 10⁻⁹, binary values capped at 2⁶³−1 in magnitude, binary
//! values below 1 in magnitude turned decimal. Go's oddities are kept: `"."`, `"+"`, `"Gi"` parse as 0.

use std::cmp::Ordering;
use std::fmt;

use num_bigint::{BigInt, Sign};

use super::{Format, Quantity, ceil_div};

/// Why a text is not a quantity; the messages are Go's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    Format,
    Numeric,
    Suffix,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::Format => {
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
            }
            ParseError::Numeric => "unable to parse numeric part of quantity",
            ParseError::Suffix => "unable to parse quantity's suffix",
        })
    }
}

impl std::error::Error for ParseError {}

impl Quantity {
    /// Parses like Go's `resource.ParseQuantity`.
    pub fn parse(text: &[u8]) -> Result<Quantity, ParseError> {
        if text.is_empty() {
            return Err(ParseError::Format);
        }
        if text == b"0" {
            return Ok(Quantity { kept: Some("0".into()), ..Quantity::zero() });
        }
        let split = split(text)?;
        let (base, exponent, format) = interpret(split.suffix)?;
        if let Some(q) = fast_path(text, &split, base, exponent, format) {
            return Ok(q);
        }
        // General path: the number as a decimal, times the suffix, rounded and capped.
        let digits: Vec<u8> = split.value.iter().copied().filter(u8::is_ascii_digit).collect();
        if digits.is_empty() {
            return Err(ParseError::Numeric);
        }
        let frac = split.value.iter().position(|&b| b == b'.').map(|dot| split.value.len() - dot - 1).unwrap_or(0);
        let (magnitude, mut exp) = decimal_digits(&digits, -(frac as i64));
        let mut magnitude = magnitude;
        if base == 2 {
            magnitude <<= exponent as u32;
        } else {
            exp += i64::from(exponent);
        }
        let mut q = Quantity::new(BigInt::from_biguint(Sign::Plus, magnitude), exp, format, None);
        // Non-zero values are rounded up (away from zero) to a multiple of 10⁻⁹.
        if !q.is_zero() && q.exp < -9 {
            q.mantissa = ceil_div_pow10(&q.mantissa, (-9 - q.exp) as u64);
            q.exp = -9;
            q.normalize();
        }
        if format == Format::BinarySI {
            let max = Quantity::new(BigInt::from(i64::MAX), 0, format, None);
            if q.cmp_value(&max) == Ordering::Greater {
                q = max;
            }
            if !q.is_zero() && q.exp < 0 && q.cmp_value(&Quantity::new(BigInt::from(1), 0, format, None)).is_lt() {
                q.format = Format::DecimalSI;
            }
        }
        if !split.positive {
            q.mantissa = -q.mantissa;
        }
        Ok(q)
    }
}

/// `ceil(|m| / 10^k)` with m's sign, for a positive m; cheap when 10^k dwarfs m.
fn ceil_div_pow10(m: &BigInt, k: u64) -> BigInt {
    if k > m.magnitude().to_string().len() as u64 {
        return BigInt::from(1);
    }
    ceil_div(m, &BigInt::from(10u32).pow(k as u32))
}

/// The digits as a number times 10^exp, trailing zeros moved into the exponent before converting.
fn decimal_digits(digits: &[u8], exp: i64) -> (num_bigint::BigUint, i64) {
    let trailing = digits.iter().rev().take_while(|&&d| d == b'0').count();
    let significant = &digits[..digits.len() - trailing];
    if significant.is_empty() {
        return (num_bigint::BigUint::ZERO, 0);
    }
    let n = num_bigint::BigUint::parse_bytes(significant, 10).unwrap_or_default();
    (n, exp + trailing as i64)
}

/// The parts of a quantity text, as Go's `parseQuantityString` splits it.
struct Split<'a> {
    positive: bool,
    /// Sign and number (`+1.5`), or `0` when only zeros were seen.
    value: &'a [u8],
    /// Integer digits without leading zeros (`0` when none).
    num: &'a [u8],
    denom: &'a [u8],
    suffix: &'a [u8],
}

const SUFFIX_CHARS: &[u8] = b"eEinumkKMGTP";

fn split(s: &[u8]) -> Result<Split<'_>, ParseError> {
    let end = s.len();
    let mut positive = true;
    let mut pos = 0;
    match s.first() {
        Some(b'-') => {
            positive = false;
            pos += 1;
        }
        Some(b'+') => pos += 1,
        _ => {}
    }
    while pos < end && s[pos] == b'0' {
        pos += 1;
    }
    if pos >= end {
        return Ok(Split { positive, value: b"0", num: b"0", denom: b"", suffix: b"" });
    }
    let num_start = pos;
    while pos < end && s[pos].is_ascii_digit() {
        pos += 1;
    }
    let mut num = &s[num_start..pos];
    if pos >= end {
        return Ok(Split { positive, value: s, num, denom: b"", suffix: b"" });
    }
    if num.is_empty() {
        num = b"0";
    }
    let mut denom: &[u8] = b"";
    if s[pos] == b'.' {
        pos += 1;
        let denom_start = pos;
        while pos < end && s[pos].is_ascii_digit() {
            pos += 1;
        }
        denom = &s[denom_start..pos];
        if pos >= end {
            return Ok(Split { positive, value: s, num, denom, suffix: b"" });
        }
    }
    let value = &s[..pos];
    let suffix_start = pos;
    while pos < end && SUFFIX_CHARS.contains(&s[pos]) {
        pos += 1;
    }
    if pos < end && (s[pos] == b'-' || s[pos] == b'+') {
        pos += 1;
    }
    while pos < end && s[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos < end {
        return Err(ParseError::Format);
    }
    Ok(Split { positive, value, num, denom, suffix: &s[suffix_start..] })
}

/// Base, exponent and format of a suffix (Go's `quantitySuffixer.interpret`).
fn interpret(suffix: &[u8]) -> Result<(u32, i32, Format), ParseError> {
    let decimal = |e| Ok((10, e, Format::DecimalSI));
    let binary = |e| Ok((2, e, Format::BinarySI));
    match suffix {
        b"" => decimal(0),
        b"n" => decimal(-9),
        b"u" => decimal(-6),
        b"m" => decimal(-3),
        b"k" => decimal(3),
        b"M" => decimal(6),
        b"G" => decimal(9),
        b"T" => decimal(12),
        b"P" => decimal(15),
        b"E" => decimal(18),
        b"Ki" => binary(10),
        b"Mi" => binary(20),
        b"Gi" => binary(30),
        b"Ti" => binary(40),
        b"Pi" => binary(50),
        b"Ei" => binary(60),
        [b'e' | b'E', rest @ ..] if !rest.is_empty() => {
            // strconv.ParseInt(rest, 10, 64), then a cast to int32 (which wraps).
            let parsed: i64 = std::str::from_utf8(rest).ok().and_then(|r| r.parse().ok()).ok_or(ParseError::Suffix)?;
            Ok((10, parsed as i32, Format::DecimalExponent))
        }
        _ => Err(ParseError::Suffix),
    }
}

/// Go's int64 fast path: taken for short numbers; it is where Go keeps the text of a value it deems canonical.
fn fast_path(text: &[u8], split: &Split<'_>, base: u32, exponent: i32, format: Format) -> Option<Quantity> {
    let digits = (split.num.len() + split.denom.len()) as i64;
    let (mut scale, precision, multiplier) = if base == 10 {
        (i64::from(exponent), 18 - digits, 1i64)
    } else if split.denom.is_empty() {
        let e = i64::from(exponent);
        (0, 15 - split.num.len() as i64 - e * 3 / 10 - 1, 1i64 << e)
    } else {
        (0, -1, 1)
    };
    if precision < 0 {
        return None;
    }
    scale -= split.denom.len() as i64;
    if scale < -9 {
        return None;
    }
    let shifted: Vec<u8> = split.num.iter().chain(split.denom).copied().collect();
    let value: i64 = std::str::from_utf8(&shifted).ok()?.parse().ok()?;
    let result = value.checked_mul(multiplier)?;
    let result = if split.positive { result } else { -result };
    let keep = if format == Format::BinarySI {
        exponent % 10 == 0 && value & 0x07 != 0
    } else {
        scale % 3 == 0 && !shifted.ends_with(b"000") && shifted[0] != b'0'
    };
    // Only ASCII reaches this point (the grammar is ASCII), so the text is valid UTF-8.
    let kept = keep.then(|| String::from_utf8_lossy(text).into_owned());
    Some(Quantity::new(BigInt::from(result), scale, format, kept))
}

#[cfg(test)]
mod tests {
    use crate::convert::quantity::go;

    #[test]
    fn go_parsing_rules() {
        for (input, want) in [
            // Text the fast path deems canonical is kept verbatim.
            ("+1Gi", "+1Gi"),
            ("01", "01"),
            ("1.", "1."),
            // Go's zeros.
            ("0", "0"),
            (".", "0"),
            ("Gi", "0"),
            // Rounded away from zero to a multiple of 10⁻⁹.
            ("1e-1000", "1e-9"),
            // Refused.
            (" 1", "ERR"),
            (".e-20", "ERR"),
            ("", "ERR"),
            ("1e", "ERR"),
            ("1K", "ERR"),
        ] {
            assert_eq!(go(input), want, "{input}");
        }
    }
}
