//! The Kubernetes quantity grammar (`500m`, `100M`, `64Ki`, `1.5G`, `1e3`), parsed exactly.
//!
//! ```text
//! quantity ::= [sign] number suffix
//! number   ::= digits | digits "." [digits] | "." digits
//! suffix   ::= "" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E"      (decimal SI)
//!            | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"                      (binary SI)
//!            | ("e" | "E") [sign] digits                                    (decimal exponent)
//! ```
//!
//! A value is kept as decimal digits with a power of ten and a power of two, never as a float,
//! so `0.1` is exactly a tenth and no input can lose precision or overflow while parsing.
//! Conversion to an integer rounds up, as Kubernetes' `Value()` and `MilliValue()` do.

use std::fmt;
use std::str::FromStr;

use crate::error::excerpt;

/// Why a string is not a quantity, or why a quantity does not fit the integer asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string is empty.
    #[error("the value is empty")]
    Empty,
    /// No digits where the number should be (`M`, `-`, `.`).
    #[error("no number before the suffix")]
    NoDigits,
    /// The text after the number is not a known suffix.
    #[error(
        "unknown suffix {0:?} (known: n u m k M G T P E, Ki Mi Gi Ti Pi Ei, or an exponent like e3)"
    )]
    UnknownSuffix(String),
    /// The exponent in `1e<exponent>` does not fit in 64 bits.
    #[error("the exponent is out of range")]
    ExponentOutOfRange,
    /// A negative quantity where only non-negative ones make sense.
    #[error("negative values are not allowed")]
    Negative,
    /// The value, rounded up, does not fit in an unsigned 64-bit integer.
    #[error("the value is too large (the maximum is {max})", max = u64::MAX)]
    Overflow,
}

/// A parsed Kubernetes quantity: `±digits × 10^exp10 × 2^exp2`, held exactly.
///
/// Equality is on the representation, so `1Ki` and `1024` are different `Quantity` values even
/// though [`Quantity::value`] gives the same number for both; compare the integers instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity {
    negative: bool,
    /// Significant decimal digits (each 0..=9), without leading or trailing zeros; empty for zero.
    digits: Vec<u8>,
    exp10: i64,
    exp2: u32,
}

impl Quantity {
    /// Parses a quantity in the Kubernetes grammar.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        if text.is_empty() {
            return Err(QuantityError::Empty);
        }
        let (negative, unsigned) = split_sign(text);
        let (int_part, frac_part, suffix) = split_number(unsigned)?;
        let (suffix_exp10, exp2) = parse_suffix(suffix)?;

        let frac_len = i64::try_from(frac_part.len()).map_err(|_| QuantityError::Overflow)?;
        let mut exp10 = suffix_exp10
            .checked_sub(frac_len)
            .ok_or(QuantityError::ExponentOutOfRange)?;

        let mut digits: Vec<u8> = int_part
            .bytes()
            .chain(frac_part.bytes())
            .map(|b| b.wrapping_sub(b'0'))
            .skip_while(|d| *d == 0)
            .collect();
        // Trailing zeros move into the exponent so the digit string stays as short as possible.
        while digits.last() == Some(&0) {
            digits.pop();
            exp10 = exp10
                .checked_add(1)
                .ok_or(QuantityError::ExponentOutOfRange)?;
        }
        if digits.is_empty() {
            // Zero has no sign and no scale worth keeping.
            return Ok(Self {
                negative: false,
                digits,
                exp10: 0,
                exp2: 0,
            });
        }
        Ok(Self {
            negative,
            digits,
            exp10,
            exp2,
        })
    }

    /// True for zero (`0`, `0Mi`, `-0.0`).
    pub fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// True for a value below zero.
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// The value as an integer, rounded up (Kubernetes `Value()`): bytes, bits, cores.
    pub fn value(&self) -> Result<u64, QuantityError> {
        self.scaled_ceil(0)
    }

    /// The value in thousandths, rounded up (Kubernetes `MilliValue()`): millicores.
    pub fn milli_value(&self) -> Result<u64, QuantityError> {
        self.scaled_ceil(3)
    }

    /// `ceil(self × 10^extra_exp10)` as a `u64`; negative values are refused, not rounded.
    fn scaled_ceil(&self, extra_exp10: i64) -> Result<u64, QuantityError> {
        if self.is_zero() {
            return Ok(0);
        }
        if self.negative {
            return Err(QuantityError::Negative);
        }
        let digits = times_power_of_two(&self.digits, self.exp2);
        let exp10 = i128::from(self.exp10).saturating_add(i128::from(extra_exp10));
        let int_len = i128::try_from(digits.len())
            .map_err(|_| QuantityError::Overflow)?
            .saturating_add(exp10);
        // u64::MAX has 20 digits; anything longer overflows and is refused before the loop.
        if int_len > 20 {
            return Err(QuantityError::Overflow);
        }
        if int_len <= 0 {
            // A non-zero value below one rounds up to one.
            return Ok(1);
        }
        let int_len = usize::try_from(int_len).map_err(|_| QuantityError::Overflow)?;
        let (int_digits, frac_digits) = match digits.split_at_checked(int_len) {
            Some(split) => split,
            // The integer part is longer than the digits: the rest are zeros from the exponent.
            None => (digits.as_slice(), &[][..]),
        };
        let mut value: u64 = 0;
        for index in 0..int_len {
            let digit = int_digits.get(index).copied().unwrap_or(0);
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(digit)))
                .ok_or(QuantityError::Overflow)?;
        }
        if frac_digits.iter().any(|d| *d != 0) {
            value = value.checked_add(1).ok_or(QuantityError::Overflow)?;
        }
        Ok(value)
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// A canonical `[-]digits[e<exponent>]` form with the same value. The grammar cannot combine an
/// exponent with a binary suffix, so a binary factor is multiplied into the digits.
impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0");
        }
        if self.negative {
            f.write_str("-")?;
        }
        for digit in times_power_of_two(&self.digits, self.exp2) {
            write!(f, "{digit}")?;
        }
        if self.exp10 != 0 {
            write!(f, "e{}", self.exp10)?;
        }
        Ok(())
    }
}

fn split_sign(text: &str) -> (bool, &str) {
    if let Some(rest) = text.strip_prefix('-') {
        (true, rest)
    } else if let Some(rest) = text.strip_prefix('+') {
        (false, rest)
    } else {
        (false, text)
    }
}

/// Splits `12.50Mi` into `("12", "50", "Mi")`.
fn split_number(text: &str) -> Result<(&str, &str, &str), QuantityError> {
    let int_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (int_part, rest) = text
        .split_at_checked(int_end)
        .ok_or(QuantityError::NoDigits)?;
    let (frac_part, suffix) = match rest.strip_prefix('.') {
        Some(after_dot) => {
            let frac_end = after_dot
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after_dot.len());
            after_dot
                .split_at_checked(frac_end)
                .ok_or(QuantityError::NoDigits)?
        }
        None => ("", rest),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(QuantityError::NoDigits);
    }
    Ok((int_part, frac_part, suffix))
}

/// Returns the suffix as `(power of ten, power of two)`.
fn parse_suffix(suffix: &str) -> Result<(i64, u32), QuantityError> {
    let scale = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => {
            let exponent = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))
                .ok_or_else(|| QuantityError::UnknownSuffix(excerpt(suffix)))?;
            (parse_exponent(exponent, suffix)?, 0)
        }
    };
    Ok(scale)
}

fn parse_exponent(exponent: &str, suffix: &str) -> Result<i64, QuantityError> {
    let (negative, digits) = split_sign(exponent);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(QuantityError::UnknownSuffix(excerpt(suffix)));
    }
    let mut value: i64 = 0;
    for byte in digits.bytes() {
        let digit = i64::from(byte.wrapping_sub(b'0'));
        value = value
            .checked_mul(10)
            .and_then(|v| {
                if negative {
                    v.checked_sub(digit)
                } else {
                    v.checked_add(digit)
                }
            })
            .ok_or(QuantityError::ExponentOutOfRange)?;
    }
    Ok(value)
}

/// Multiplies a big-endian decimal digit string by `2^exp2` (`exp2 <= 60`), in decimal, so the
/// result stays exact however many digits the input had.
fn times_power_of_two(digits: &[u8], exp2: u32) -> Vec<u8> {
    let factor: u128 = 1u128.checked_shl(exp2).unwrap_or(1);
    if factor == 1 {
        return digits.to_vec();
    }
    let mut reversed = Vec::with_capacity(digits.len().saturating_add(19));
    let mut carry: u128 = 0;
    // digit * factor + carry < 10 * 2^60 + 2^64: far below u128::MAX, so these cannot wrap.
    for digit in digits.iter().rev() {
        let product = u128::from(*digit).wrapping_mul(factor).wrapping_add(carry);
        reversed.push(low_digit(product));
        carry = product / 10;
    }
    while carry > 0 {
        reversed.push(low_digit(carry));
        carry /= 10;
    }
    reversed.reverse();
    reversed
}

fn low_digit(value: u128) -> u8 {
    // `value % 10` is below 10, so the conversion always succeeds.
    u8::try_from(value % 10).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Result<u64, QuantityError> {
        Quantity::parse(text).and_then(|q| q.value())
    }

    fn milli(text: &str) -> Result<u64, QuantityError> {
        Quantity::parse(text).and_then(|q| q.milli_value())
    }

    #[test]
    fn value_table() {
        let table: &[(&str, Result<u64, QuantityError>)] = &[
            ("0", Ok(0)),
            ("1", Ok(1)),
            ("+1", Ok(1)),
            ("100M", Ok(100_000_000)),
            ("1G", Ok(1_000_000_000)),
            ("500k", Ok(500_000)),
            ("64Ki", Ok(65_536)),
            ("512Mi", Ok(536_870_912)),
            ("1.5G", Ok(1_500_000_000)),
            ("1.5Gi", Ok(1_610_612_736)),
            ("1e3", Ok(1000)),
            ("1E3", Ok(1000)),
            ("1e+3", Ok(1000)),
            ("15e-1", Ok(2)),
            ("1E", Ok(1_000_000_000_000_000_000)),
            ("1Ei", Ok(1 << 60)),
            ("15Ei", Ok(15 << 60)),
            ("16Ei", Err(QuantityError::Overflow)),
            ("18446744073709551615", Ok(u64::MAX)),
            ("18446744073709551616", Err(QuantityError::Overflow)),
            ("18446744073709551614.5", Ok(u64::MAX)),
            ("99999999999999999999E", Err(QuantityError::Overflow)),
            (
                "1e99999999999999999999",
                Err(QuantityError::ExponentOutOfRange),
            ),
            ("1e-99999999", Ok(1)),
            ("0e99999999", Ok(0)),
            ("500m", Ok(1)),
            ("1m", Ok(1)),
            ("1n", Ok(1)),
            ("1u", Ok(1)),
            (".5", Ok(1)),
            ("5.", Ok(5)),
            ("0.1", Ok(1)),
            ("1.0000000000000000000000000000000000000000001", Ok(2)),
            ("000000000000000000000000000000000000000007", Ok(7)),
            ("7000000000000000000000000000000000000e-36", Ok(7)),
            ("0.000000001Ei", Ok(1_152_921_505)),
            ("-0", Ok(0)),
            ("-0.0Mi", Ok(0)),
            ("-5M", Err(QuantityError::Negative)),
            ("-1m", Err(QuantityError::Negative)),
            ("", Err(QuantityError::Empty)),
            ("M", Err(QuantityError::NoDigits)),
            ("-", Err(QuantityError::NoDigits)),
            (".", Err(QuantityError::NoDigits)),
            ("+-1", Err(QuantityError::NoDigits)),
            ("10Q", Err(QuantityError::UnknownSuffix("Q".into()))),
            ("1.2.3", Err(QuantityError::UnknownSuffix(".3".into()))),
            ("1 M", Err(QuantityError::UnknownSuffix(" M".into()))),
            (" 1", Err(QuantityError::NoDigits)),
            ("1mi", Err(QuantityError::UnknownSuffix("mi".into()))),
            ("1KI", Err(QuantityError::UnknownSuffix("KI".into()))),
            ("1K", Err(QuantityError::UnknownSuffix("K".into()))),
            ("1e", Err(QuantityError::UnknownSuffix("e".into()))),
            ("1e+", Err(QuantityError::UnknownSuffix("e+".into()))),
            ("1e3.5", Err(QuantityError::UnknownSuffix("e3.5".into()))),
            ("1µ", Err(QuantityError::UnknownSuffix("µ".into()))),
            ("0x10", Err(QuantityError::UnknownSuffix("x10".into()))),
        ];
        for (text, want) in table {
            assert_eq!(&value(text), want, "value of {text:?}");
        }
    }

    #[test]
    fn milli_value_table() {
        let table: &[(&str, Result<u64, QuantityError>)] = &[
            ("500m", Ok(500)),
            ("1", Ok(1000)),
            ("1.5", Ok(1500)),
            ("0.0001", Ok(1)),
            ("100u", Ok(1)),
            ("2500000n", Ok(3)),
            ("1k", Ok(1_000_000)),
            ("18446744073709551", Ok(18_446_744_073_709_551_000)),
            ("18446744073709552", Err(QuantityError::Overflow)),
        ];
        for (text, want) in table {
            assert_eq!(&milli(text), want, "milli value of {text:?}");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "0", "1", "1.5Gi", "-5M", "1e-9", "64Ki", "0.000001", "123e45",
        ] {
            let parsed = Quantity::parse(text).unwrap();
            let shown = parsed.to_string();
            let reparsed = Quantity::parse(&shown).unwrap();
            assert_eq!(parsed.value(), reparsed.value(), "{text} -> {shown}");
            assert_eq!(
                parsed.milli_value(),
                reparsed.milli_value(),
                "{text} -> {shown}"
            );
        }
    }
}
