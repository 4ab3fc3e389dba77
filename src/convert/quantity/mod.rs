//! Kubernetes resource quantities (`resource.Quantity` of k8s.io/apimachinery v0.32.11, the version Armada builds
//! with), with Go's exact rules, so that what we store reads back in Lookout exactly as Armada's ingester writes it.
//!
//! This file owns the value and its arithmetic: [`Quantity`] (an arbitrary-precision mantissa times a power of ten,
//! so no input is ever rounded except by Go's own rules, and huge exponents cost nothing), [`Quantity::add`] (the sum
//! keeps the left operand's format, unless the left operand is 0), [`Quantity::cmp_value`] and
//! [`Quantity::ceil_scaled`], and [`Slot`], as Armada folds scheduling requirements. Reading and writing the text:
//!
//! - `parse`: [`Quantity::parse`], Go's `ParseQuantity` (grammar, suffixes, fast path, rounding, caps);
//! - `format`: [`Quantity::to_go_string`], Go's `String()` (kept text, canonical suffixes).

use std::cmp::Ordering;

use num_bigint::{BigInt, Sign};

mod format;
mod parse;

pub use parse::ParseError;

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

    /// Number of decimal digits of the integer part of |value| (an upper bound of log10 + 1).
    fn magnitude_order(&self) -> i64 {
        let digits = match u64::try_from(self.mantissa.magnitude()) {
            Ok(m) => m.checked_ilog10().map_or(1, |d| i64::from(d) + 1),
            Err(_) => self.mantissa.magnitude().to_string().len() as i64,
        };
        digits + self.exp
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

/// `ceil(a / b)` for a non-negative `a` and a positive `b`.
fn ceil_div(a: &BigInt, b: &BigInt) -> BigInt {
    let q = a / b;
    if (a % b).sign() == Sign::NoSign { q } else { q + 1 }
}

/// Parses and writes back as Go does (`"ERR"` when Go refuses the text): what the tests of each part compare.
#[cfg(test)]
fn go(text: &str) -> String {
    Quantity::parse(text.as_bytes()).map(|q| q.to_go_string()).unwrap_or_else(|_| "ERR".into())
}

#[cfg(test)]
mod tests {
    use super::*;

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
