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
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_go_string())
    }
}

#[cfg(test)]
mod tests {
    use crate::convert::quantity::go;

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
