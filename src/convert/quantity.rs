//! Kubernetes resource quantities (`resource.Quantity` of k8s.io/apimachinery v0.32.11, the version Armada builds
//! with), with Go's exact rules, so that what we store reads back in Lookout exactly as Armada's ingester writes it:
//!
//! - [`Quantity::parse`]: the grammar and results of Go's `ParseQuantity` — the format taken from the suffix
//!   (binary `Ki`…`Ei`, decimal `n`…`E`, or an exponent `e3`/`E-2`), non-zero values rounded away from zero to a
//!   multiple of 10⁻⁹, binary values capped at 2⁶³−1 in magnitude, binary values below 1 in magnitude turned
//!   decimal. Go's oddities are kept: `"."`, `"+"`, `"Gi"` parse as 0; an exponent wraps to 32 bits; and a value
//!   Go's fast path deems canonical keeps its text verbatim (`"+1Gi"`, `"01"`, `"1E3"`, `"1."`).
//! - [`Quantity::to_go_string`]: Go's `String()` — that kept text, else the canonical form: no fractional digits,
//!   the largest suffix of the value's format that loses nothing (`1024Mi` → `1Gi`, `0.5` → `500m`, `1.5Gi` →
//!   `1536Mi`, `1e3` → `1e3`, `1e1000` → `10e999`). A binary value below 1024 or not whole is written in decimal;
//!   a decimal exponent without a suffix (beyond `E`, 10¹⁸) is written as its mantissa alone, as Go does.
//! - [`Quantity::add`] (the sum keeps the left operand's format, unless the left operand is 0) and
//!   [`Quantity::cmp_value`], as used by Armada's scheduling requirements.
//!
//! Values are exact: an arbitrary-precision mantissa times a power of ten, so no input is ever rounded except by
//! Go's own rules, and huge exponents cost nothing.

use std::cmp::Ordering;
use std::fmt;

use num_bigint::{BigInt, Sign};

/// How a quantity is written (Go's `resource.Format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `12e6`
    DecimalExponent,
    /// `12Mi` (12 × 2²⁰)
    BinarySI,
    /// `12M` (12 × 10⁶)
    DecimalSI,
}

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

/// A sum whose operands are more than this many decimal places apart is not computed digit by digit.
const MAX_ALIGN: u64 = 10_000;

/// A quantity: `mantissa × 10^exp`, the mantissa without a factor 10 (or zero, with `exp` 0).
#[derive(Debug, Clone)]
pub struct Quantity {
    mantissa: BigInt,
    exp: i64,
    format: Format,
    /// The text Go keeps from parsing and writes back unchanged.
    kept: Option<String>,
}

/// The two operands of [`Quantity::add`] are too far apart in magnitude to add exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRange;

impl Quantity {
    /// The zero value (Go's `Quantity{}`), as a missing quantity decodes.
    pub fn zero() -> Quantity {
        Quantity { mantissa: BigInt::ZERO, exp: 0, format: Format::DecimalSI, kept: None }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn is_zero(&self) -> bool {
        self.mantissa.sign() == Sign::NoSign
    }

    fn new(mantissa: BigInt, exp: i64, format: Format, kept: Option<String>) -> Quantity {
        let mut q = Quantity { mantissa, exp, format, kept };
        q.normalize();
        q
    }

    fn normalize(&mut self) {
        if self.is_zero() {
            self.exp = 0;
            return;
        }
        let ten = BigInt::from(10u32);
        while (&self.mantissa % &ten).sign() == Sign::NoSign {
            self.mantissa /= &ten;
            self.exp += 1;
        }
    }

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

    /// What Go's `Quantity.String()` writes.
    pub fn to_go_string(&self) -> String {
        if let Some(kept) = &self.kept {
            return kept.clone();
        }
        if self.is_zero() {
            return "0".into();
        }
        match self.format {
            // Go writes a binary value below 1024, or not whole, in decimal.
            Format::BinarySI if self.exp < 0 || self.below_1024() => self.decimal(Format::DecimalSI),
            Format::BinarySI => self.binary(),
            format => self.decimal(format),
        }
    }

    /// |value| < 1024, for a whole value.
    fn below_1024(&self) -> bool {
        self.magnitude_order() <= 4
            && self.mantissa.magnitude() * num_bigint::BigUint::from(10u32).pow(self.exp as u32)
                < num_bigint::BigUint::from(1024u32)
    }

    /// Number of decimal digits of the integer part of |value| (an upper bound of log10 + 1).
    fn magnitude_order(&self) -> i64 {
        self.mantissa.magnitude().to_string().len() as i64 + self.exp
    }

    fn decimal(&self, format: Format) -> String {
        let shift = self.exp.rem_euclid(3);
        let number = &self.mantissa * BigInt::from(10u32).pow(shift as u32);
        let exp = self.exp - shift;
        let suffix = match format {
            Format::DecimalExponent if exp == 0 => String::new(),
            Format::DecimalExponent => format!("e{exp}"),
            _ => match exp {
                -9 => "n",
                -6 => "u",
                -3 => "m",
                3 => "k",
                6 => "M",
                9 => "G",
                12 => "T",
                15 => "P",
                18 => "E",
                // No decimal suffix for this power: Go writes the mantissa alone.
                _ => "",
            }
            .to_string(),
        };
        format!("{number}{suffix}")
    }

    fn binary(&self) -> String {
        let mut number = &self.mantissa * BigInt::from(10u32).pow(self.exp as u32);
        let k1024 = BigInt::from(1024u32);
        let mut times = 0;
        while (&number % &k1024).sign() == Sign::NoSign {
            number /= &k1024;
            times += 1;
        }
        // Go has no suffix beyond Ei and then writes the number alone.
        let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"].get(times).copied().unwrap_or("");
        format!("{number}{suffix}")
    }

    /// Adds like Go's `Quantity.Add`: the result keeps `self`'s format unless `self` is zero, then takes `y`'s.
    pub fn add(&mut self, y: &Quantity) -> Result<(), OutOfRange> {
        if self.is_zero() {
            self.format = y.format;
        }
        if y.is_zero() {
            self.kept = None;
            return Ok(());
        }
        if self.is_zero() {
            self.mantissa = y.mantissa.clone();
            self.exp = y.exp;
            self.kept = None;
            return Ok(());
        }
        let exp = self.exp.min(y.exp);
        if self.exp.abs_diff(y.exp) > MAX_ALIGN {
            return Err(OutOfRange);
        }
        self.mantissa = &self.mantissa * BigInt::from(10u32).pow((self.exp - exp) as u32)
            + &y.mantissa * BigInt::from(10u32).pow((y.exp - exp) as u32);
        self.exp = exp;
        self.kept = None;
        self.normalize();
        Ok(())
    }

    /// Compares the values (Go's `Quantity.Cmp`).
    pub fn cmp_value(&self, other: &Quantity) -> Ordering {
        let (a, b) = (self.mantissa.sign(), other.mantissa.sign());
        if a != b {
            return a.cmp(&b);
        }
        if a == Sign::NoSign {
            return Ordering::Equal;
        }
        let by_magnitude = match self.magnitude_order().cmp(&other.magnitude_order()) {
            Ordering::Equal => {
                // Same number of integer digits, so the exponents are at most the mantissas' lengths apart.
                let exp = self.exp.min(other.exp);
                let x = self.mantissa.magnitude() * num_bigint::BigUint::from(10u32).pow((self.exp - exp) as u32);
                let y = other.mantissa.magnitude() * num_bigint::BigUint::from(10u32).pow((other.exp - exp) as u32);
                x.cmp(&y)
            }
            order => order,
        };
        if a == Sign::Minus { by_magnitude.reverse() } else { by_magnitude }
    }

    /// `ceil(value × 10^scale)` as an i64, saturating (`1.5` at scale 3 → 1500, `1Gi` at 0 → 1073741824).
    pub fn ceil_scaled(&self, scale: u32) -> i64 {
        if self.is_zero() {
            return 0;
        }
        let negative = self.mantissa.sign() == Sign::Minus;
        let exp = self.exp + i64::from(scale);
        let saturated = if negative { i64::MIN + 1 } else { i64::MAX };
        let magnitude: BigInt = self.mantissa.magnitude().clone().into();
        let digits = magnitude.to_string().len() as i64;
        let value = if exp >= 0 {
            if digits + exp > 20 {
                return saturated;
            }
            magnitude * BigInt::from(10u32).pow(exp as u32)
        } else if -exp > digits {
            // Below 1 in magnitude: up to 1, or (negative) up to 0.
            return if negative { 0 } else { 1 };
        } else {
            let divisor = BigInt::from(10u32).pow((-exp) as u32);
            if negative { magnitude / divisor } else { ceil_div(&magnitude, &divisor) }
        };
        match i64::try_from(&value) {
            Ok(v) if negative => -v,
            Ok(v) => v,
            Err(_) => saturated,
        }
    }
}

/// One resource of a `ResourceList` being folded as Armada folds scheduling requirements (`pkg/api/util.go`):
/// absent until something is added, or until a quantity larger than zero is taken as a maximum.
#[derive(Debug, Clone, Default)]
pub struct Slot(Option<Quantity>);

impl Slot {
    /// `addResourcesToList`: the slot (zero when absent) plus `q`; always present afterwards.
    pub fn add(&mut self, q: &Quantity) -> Result<(), OutOfRange> {
        self.0.get_or_insert_with(Quantity::zero).add(q)
    }

    /// `maxResourcesToList`: `q`, as it is (its kept text too), when larger than the slot (zero when absent).
    pub fn max(&mut self, q: &Quantity) {
        let larger = match &self.0 {
            Some(current) => q.cmp_value(current).is_gt(),
            None => q.mantissa.sign() == Sign::Plus,
        };
        if larger {
            self.0 = Some(q.clone());
        }
    }

    pub fn get(&self) -> Option<&Quantity> {
        self.0.as_ref()
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_go_string())
    }
}

fn ceil_div(a: &BigInt, b: &BigInt) -> BigInt {
    let q = a / b;
    if (a % b).sign() == Sign::NoSign { q } else { q + 1 }
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
    use super::*;

    fn go(s: &str) -> String {
        Quantity::parse(s.as_bytes()).map(|q| q.to_go_string()).unwrap_or_else(|_| "ERR".into())
    }

    #[test]
    fn canonical_forms() {
        for (input, want) in [
            ("1Gi", "1Gi"),
            ("1024Mi", "1Gi"),
            ("0.5", "500m"),
            ("1500m", "1500m"),
            ("1.5", "1500m"),
            ("1e3", "1e3"),
            ("1e1000", "10e999"),
            ("100M", "100M"),
            ("1.5Gi", "1536Mi"),
            ("12345678901234567890", "12345678901234567890"),
            ("0", "0"),
            ("-1.5", "-1500m"),
            ("1000E", "1"),
            ("+1Gi", "+1Gi"),
            ("01", "01"),
            ("1.", "1."),
            (".", "0"),
            ("Gi", "0"),
            ("-.5Ki", "-512"),
            ("1e-1000", "1e-9"),
            ("0.1m", "100u"),
            (" 1", "ERR"),
            (".e-20", "ERR"),
            ("", "ERR"),
            ("1e", "ERR"),
            ("1K", "ERR"),
        ] {
            assert_eq!(go(input), want, "{input}");
        }
    }

    fn sum(items: &[&str]) -> String {
        let mut acc = Quantity::zero();
        for i in items {
            acc.add(&Quantity::parse(i.as_bytes()).unwrap()).unwrap();
        }
        acc.to_go_string()
    }

    #[test]
    fn sums_keep_the_left_format() {
        assert_eq!(sum(&["1Gi", "1500m"]), "1073741825500m");
        assert_eq!(sum(&["0.5Ki", "0.5Ki"]), "1Ki");
        assert_eq!(sum(&["4Ei", "4Ei"]), "8Ei");
        assert_eq!(sum(&["-4Ei", "-4Ei"]), "-8Ei");
        assert_eq!(sum(&["1", "1Gi"]), "1073741825");
    }

    #[test]
    fn ceil_scaled_rounds_up_and_saturates() {
        let c = |s: &str, scale| Quantity::parse(s.as_bytes()).unwrap().ceil_scaled(scale);
        assert_eq!(c("1.5", 3), 1500);
        assert_eq!(c("100u", 3), 1);
        assert_eq!(c("1Gi", 0), 1 << 30);
        assert_eq!(c("-1.5", 0), -1);
        assert_eq!(c("1e999", 0), i64::MAX);
        assert_eq!(c("1e-999", 0), 1);
        assert_eq!(c("100Ei", 0), i64::MAX);
    }
}
