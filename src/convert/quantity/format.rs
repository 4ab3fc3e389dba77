//! Writing a quantity exactly as Go's `Quantity.String()` does: the text kept from parsing, else the canonical
//! form — no fractional digits, the largest suffix of the value's format that loses nothing (`1024Mi` → `1Gi`,
//! `0.5` → `500m`, `1.5Gi` → `1536Mi`, `1e3` → `1e3`, `1e1000` → `10e999`). A binary value below 1024 or not whole
//! is written in decimal; a decimal exponent without a suffix (beyond `E`, 10¹⁸) is written as its mantissa alone.

use std::fmt;

use num_bigint::{BigInt, Sign};

use super::{Format, Quantity};

impl Quantity {
    /// What Go's `Quantity.String()` writes.
    pub fn to_go_string(&self) -> String {
        self.go_string(Arithmetic::Machine)
    }

    /// [`Quantity::to_go_string`], computed with machine integers where the value allows (every quantity a pod
    /// spec holds in practice; big-number arithmetic was most of the cost of writing job specs), else with big
    /// numbers. The two give the same text (a property test holds them to each other).
    fn go_string(&self, arithmetic: Arithmetic) -> String {
        if let Some(kept) = &self.kept {
            return kept.clone();
        }
        if self.is_zero() {
            return "0".into();
        }
        let small = match arithmetic {
            Arithmetic::Machine => self.small(),
            Arithmetic::Big => None,
        };
        match self.format {
            // Go writes a binary value below 1024, or not whole, in decimal.
            Format::BinarySI if self.exp < 0 || self.below_1024(small) => self.decimal(Format::DecimalSI, small),
            Format::BinarySI => self.binary(small),
            format => self.decimal(format, small),
        }
    }

    /// The mantissa as a machine integer, when it fits in 64 bits and the exponent is at most 18 (so that the
    /// value, mantissa × 10^exp, fits in 128 bits).
    fn small(&self) -> Option<i128> {
        i64::try_from(&self.mantissa).ok().filter(|_| self.exp <= 18).map(i128::from)
    }

    /// |value| < 1024, for a whole value.
    fn below_1024(&self, small: Option<i128>) -> bool {
        match small {
            Some(m) => m.unsigned_abs() * 10u128.pow(self.exp as u32) < 1024,
            None => {
                self.magnitude_order() <= 4
                    && self.mantissa.magnitude() * num_bigint::BigUint::from(10u32).pow(self.exp as u32)
                        < num_bigint::BigUint::from(1024u32)
            }
        }
    }

    fn decimal(&self, format: Format, small: Option<i128>) -> String {
        let shift = self.exp.rem_euclid(3);
        let number = match small {
            Some(m) => (m * 10i128.pow(shift as u32)).to_string(),
            None => (&self.mantissa * BigInt::from(10u32).pow(shift as u32)).to_string(),
        };
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
        number + &suffix
    }

    /// A whole binary value of at least 1024.
    fn binary(&self, small: Option<i128>) -> String {
        let (number, times) = match small {
            Some(m) => {
                let mut number = m * 10i128.pow(self.exp as u32);
                let mut times = 0;
                while number % 1024 == 0 {
                    number /= 1024;
                    times += 1;
                }
                (number.to_string(), times)
            }
            None => {
                let mut number = &self.mantissa * BigInt::from(10u32).pow(self.exp as u32);
                let k1024 = BigInt::from(1024u32);
                let mut times = 0;
                while (&number % &k1024).sign() == Sign::NoSign {
                    number /= &k1024;
                    times += 1;
                }
                (number.to_string(), times)
            }
        };
        // Go has no suffix beyond Ei and then writes the number alone.
        let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"].get(times).copied().unwrap_or("");
        number + suffix
    }
}

/// How [`Quantity::go_string`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arithmetic {
    /// Machine integers where the value fits, big numbers otherwise.
    Machine,
    /// Big numbers only (what the property test compares with).
    #[cfg_attr(not(test), allow(dead_code))]
    Big,
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_go_string())
    }
}

#[cfg(test)]
mod tests {
    use num_bigint::BigInt;
    use proptest::prelude::*;

    use super::{Arithmetic, Format, Quantity};
    use crate::convert::quantity::go;

    fn format() -> impl Strategy<Value = Format> {
        prop_oneof![Just(Format::DecimalExponent), Just(Format::BinarySI), Just(Format::DecimalSI)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// Machine integers write exactly what big numbers write, around every boundary (64-bit mantissas,
        /// exponents up to and past 18, values at and near 1024 and its multiples).
        #[test]
        fn machine_integers_write_what_big_numbers_write(
            mantissa in prop_oneof![
                any::<i64>(),
                -5000i64..5000,
                prop::sample::select(vec![1023i64, 1024, 1025, -1024, i64::MIN, i64::MAX]),
                (1i64..64).prop_map(|k| k * 1024),
                (1i64..1 << 20).prop_map(|k| k * 1024),
            ],
            exp in prop_oneof![-30i64..30, -2i64..3],
            format in format(),
        ) {
            let q = Quantity::new(BigInt::from(mantissa), exp, format, None);
            prop_assert_eq!(q.go_string(Arithmetic::Machine), q.go_string(Arithmetic::Big));
        }
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
            ("-1.5", "-1500m"),
            ("1000E", "1"),
            ("-.5Ki", "-512"),
            ("0.1m", "100u"),
        ] {
            assert_eq!(go(input), want, "{input}");
        }
    }
}
