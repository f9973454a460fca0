//! Go-style durations (`50ms`, `1.5s`, `1m30s`, `250us`), as `time.ParseDuration` reads them,
//! computed in integers so `0.1s` is exactly 100ms.

use std::time::Duration;

use crate::error::excerpt;

const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// Why a string is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string is empty.
    #[error("the value is empty")]
    Empty,
    /// No digits where a number should be.
    #[error("expected a number at {0:?}")]
    NoNumber(String),
    /// A number without a unit (only `0` may go without one).
    #[error("missing unit after {0:?} (units: ns, us, µs, ms, s, m, h)")]
    MissingUnit(String),
    /// A unit that is not one of Go's.
    #[error("unknown unit {0:?} (units: ns, us, µs, ms, s, m, h)")]
    UnknownUnit(String),
    /// Durations here are lengths of time; a negative one means nothing.
    #[error("negative durations are not allowed")]
    Negative,
    /// Longer than `std::time::Duration` can hold.
    #[error("the duration is too long")]
    Overflow,
}

/// Parses a Go duration: an optional sign, then one or more `<number><unit>` parts, each number
/// possibly fractional. Digits below a nanosecond are dropped, as Go does.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    // Go accepts a bare zero, with or without a sign, and nothing else without a unit.
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(DurationError::NoNumber(excerpt(text)));
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (nanos, tail) = parse_part(rest)?;
        total = total.checked_add(nanos).ok_or(DurationError::Overflow)?;
        rest = tail;
    }
    if negative && total > 0 {
        return Err(DurationError::Negative);
    }
    let seconds = u64::try_from(total / NANOS_PER_SECOND).map_err(|_| DurationError::Overflow)?;
    // The remainder is below 10^9, so it always fits.
    let nanos = u32::try_from(total % NANOS_PER_SECOND).map_err(|_| DurationError::Overflow)?;
    Ok(Duration::new(seconds, nanos))
}

/// Parses one `<number><unit>` part from the front of `text`; returns nanoseconds and the rest.
fn parse_part(text: &str) -> Result<(u128, &str), DurationError> {
    let no_number = || DurationError::NoNumber(excerpt(text));
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, after_number) = text.split_at_checked(number_end).ok_or_else(no_number)?;
    let (int_digits, frac_digits) = number.split_once('.').unwrap_or((number, ""));
    if (int_digits.is_empty() && frac_digits.is_empty()) || frac_digits.contains('.') {
        return Err(no_number());
    }
    let unit_end = after_number
        .find(|c: char| c.is_ascii_digit() || c == '.')
        .unwrap_or(after_number.len());
    let (unit, rest) = after_number
        .split_at_checked(unit_end)
        .ok_or_else(no_number)?;
    if unit.is_empty() {
        return Err(DurationError::MissingUnit(excerpt(number)));
    }
    let unit_nanos =
        unit_in_nanos(unit).ok_or_else(|| DurationError::UnknownUnit(excerpt(unit)))?;

    let mut nanos: u128 = 0;
    for byte in int_digits.bytes() {
        nanos = nanos
            .checked_mul(10)
            .and_then(|n| n.checked_add(u128::from(byte.wrapping_sub(b'0'))))
            .ok_or(DurationError::Overflow)?;
    }
    nanos = nanos
        .checked_mul(unit_nanos)
        .ok_or(DurationError::Overflow)?;
    // The fraction contributes floor(fraction × unit). The largest unit is 3.6×10^12 ns, so
    // digits past the 13th cannot reach a whole nanosecond and are dropped, keeping the
    // arithmetic bounded whatever the input length.
    let mut numerator: u128 = 0;
    let mut denominator: u128 = 1;
    for byte in frac_digits.bytes().take(13) {
        numerator = numerator
            .saturating_mul(10)
            .saturating_add(u128::from(byte.wrapping_sub(b'0')));
        denominator = denominator.saturating_mul(10);
    }
    let fraction = numerator
        .saturating_mul(unit_nanos)
        .checked_div(denominator)
        .unwrap_or(0);
    let nanos = nanos.checked_add(fraction).ok_or(DurationError::Overflow)?;
    Ok((nanos, rest))
}

fn unit_in_nanos(unit: &str) -> Option<u128> {
    let nanos = match unit {
        "ns" => 1,
        // Go accepts both the micro sign (U+00B5) and the Greek small letter mu (U+03BC).
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => NANOS_PER_SECOND,
        "m" => 60 * NANOS_PER_SECOND,
        "h" => 3_600 * NANOS_PER_SECOND,
        _ => return None,
    };
    Some(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        let table: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("-0", Duration::ZERO),
            ("+0", Duration::ZERO),
            ("50ms", Duration::from_millis(50)),
            ("100ms", Duration::from_millis(100)),
            ("1s", Duration::from_secs(1)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("250\u{3bc}s", Duration::from_micros(250)),
            ("1500ns", Duration::from_nanos(1500)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.1s", Duration::from_millis(100)),
            (".5ms", Duration::from_micros(500)),
            ("1.ms", Duration::from_millis(1)),
            ("1m30s", Duration::from_secs(90)),
            ("1h", Duration::from_secs(3600)),
            ("1h0.5m", Duration::from_secs(3630)),
            ("+2s", Duration::from_secs(2)),
            (
                "0.3333333333333333333333333333333s",
                Duration::from_nanos(333_333_333),
            ),
            ("1.0000000001s", Duration::from_secs(1)),
        ];
        for (text, want) in table {
            assert_eq!(parse_duration(text).as_ref(), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_bad_durations() {
        let table: &[(&str, DurationError)] = &[
            ("", DurationError::Empty),
            ("-", DurationError::NoNumber("-".into())),
            ("100", DurationError::MissingUnit("100".into())),
            ("1s5", DurationError::MissingUnit("5".into())),
            ("ms", DurationError::NoNumber("ms".into())),
            (".ms", DurationError::NoNumber(".ms".into())),
            ("1.2.3s", DurationError::NoNumber("1.2.3s".into())),
            ("5sec", DurationError::UnknownUnit("sec".into())),
            ("5 s", DurationError::UnknownUnit(" s".into())),
            ("5d", DurationError::UnknownUnit("d".into())),
            ("5MS", DurationError::UnknownUnit("MS".into())),
            ("-5ms", DurationError::Negative),
            (
                "99999999999999999999999999999999999999h",
                DurationError::Overflow,
            ),
            ("9999999999999999999999999999999s", DurationError::Overflow),
        ];
        for (text, want) in table {
            assert_eq!(parse_duration(text).as_ref(), Err(want), "{text}");
        }
    }
}
