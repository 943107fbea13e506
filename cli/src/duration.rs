//! Go duration strings (`"100ms"`, `"3s"`, `"1m30s"`), as CometBFT's config.toml writes them.
//!
//! Parsing follows Go's `time.ParseDuration`: an optional sign, then one or more decimal
//! numbers (with an optional fraction) each followed by a unit (`ns`, `us`, `µs`, `μs`, `ms`,
//! `s`, `m`, `h`); the bare string `"0"` is zero. Printing follows Go's `Duration.String`, so a
//! value read and written again is unchanged (`"1m30s"`, `"100ms"`, `"0s"`).

use std::time::Duration;

/// Why a string is not a Go duration (or not a usable one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string is empty.
    #[error("empty duration")]
    Empty,
    /// A number is missing where one was expected.
    #[error("expected a number")]
    ExpectedNumber,
    /// A number has no unit after it.
    #[error("missing unit (use ns, us, ms, s, m or h)")]
    MissingUnit,
    /// A unit is not one Go knows.
    #[error("unknown unit {0:?} (use ns, us, ms, s, m or h)")]
    UnknownUnit(String),
    /// The value does not fit Go's 64-bit nanosecond count.
    #[error("out of range")]
    Overflow,
    /// The value is negative, which no configured duration may be.
    #[error("can't be negative")]
    Negative,
}

const NANOS_PER_UNIT: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),  // micro sign
    ("\u{3bc}s", 1_000), // Greek small letter mu
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses a Go duration string into a non-negative [`Duration`].
///
/// Negative values (`"-1s"`) are refused with [`DurationError::Negative`], as CometBFT's
/// `ValidateBasic` refuses them for every duration in `[p2p]`; `"-0s"` is zero.
pub fn parse_go_duration(input: &str) -> Result<Duration, DurationError> {
    let (negative, rest) = match input.as_bytes().first() {
        None => return Err(DurationError::Empty),
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        Some(_) => (false, input),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(DurationError::ExpectedNumber);
    }
    // Total in units of 1e-9 ns (so fractions of a nanosecond add up exactly like Go's
    // truncation of each term); u128 holds Go's whole range many times over.
    let mut total_nanos: u128 = 0;
    let mut s = rest;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after_int) = s.split_at(int_len);
        let (frac_part, after_num) = match after_int.strip_prefix('.') {
            Some(tail) => {
                let frac_len = tail.bytes().take_while(u8::is_ascii_digit).count();
                tail.split_at(frac_len)
            }
            None => ("", after_int),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(DurationError::ExpectedNumber);
        }
        let unit_len = after_num
            .char_indices()
            .find(|&(_, c)| c == '.' || c.is_ascii_digit())
            .map_or(after_num.len(), |(i, _)| i);
        let (unit, tail) = after_num.split_at(unit_len);
        if unit.is_empty() {
            return Err(DurationError::MissingUnit);
        }
        let per_unit = NANOS_PER_UNIT
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|&(_, n)| n)
            .ok_or_else(|| DurationError::UnknownUnit(unit.to_owned()))?;
        let whole = parse_digits(int_part)?;
        let mut term = whole.checked_mul(per_unit).ok_or(DurationError::Overflow)?;
        // Fraction: only the digits that can matter (Go also stops at 1e-? precision).
        let mut scale: u128 = 1;
        let mut frac: u128 = 0;
        for digit in frac_part.bytes().take(30) {
            frac = frac * 10 + u128::from(digit - b'0');
            scale *= 10;
        }
        term = term
            .checked_add(frac * per_unit / scale)
            .ok_or(DurationError::Overflow)?;
        total_nanos = total_nanos
            .checked_add(term)
            .ok_or(DurationError::Overflow)?;
        if total_nanos > i64::MAX as u128 {
            return Err(DurationError::Overflow);
        }
        s = tail;
    }
    if negative && total_nanos != 0 {
        return Err(DurationError::Negative);
    }
    let secs = (total_nanos / 1_000_000_000) as u64;
    let nanos = (total_nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

fn parse_digits(digits: &str) -> Result<u128, DurationError> {
    let mut value: u128 = 0;
    for digit in digits.bytes() {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u128::from(digit - b'0')))
            .ok_or(DurationError::Overflow)?;
        if value > i64::MAX as u128 {
            return Err(DurationError::Overflow);
        }
    }
    Ok(value)
}

/// Formats a duration as Go's `Duration.String` does: `"0s"`, `"100ms"`, `"1.5µs"`, `"1m30s"`,
/// `"2h0m0s"`.
#[must_use]
pub fn format_go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000_000_000 {
        let (unit, per) = if nanos < 1_000 {
            ("ns", 1)
        } else if nanos < 1_000_000 {
            ("\u{b5}s", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", fixed_point(nanos, per));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = (nanos / 60_000_000_000) % 60;
    let sec_nanos = nanos % 60_000_000_000;
    let seconds = fixed_point(sec_nanos, 1_000_000_000);
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// `value / per` as a decimal with trailing zeros of the fraction removed.
fn fixed_point(value: u128, per: u128) -> String {
    let whole = value / per;
    let frac = value % per;
    if frac == 0 {
        return whole.to_string();
    }
    let width = per.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_cometbft_defaults_and_compound_values() {
        assert_eq!(parse_go_duration("100ms"), Ok(ms(100)));
        assert_eq!(parse_go_duration("3s"), Ok(ms(3_000)));
        assert_eq!(parse_go_duration("20s"), Ok(ms(20_000)));
        assert_eq!(parse_go_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_go_duration("1h2m3s4ms"), Ok(ms(3_723_004)));
        assert_eq!(parse_go_duration("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse_go_duration(".5s"), Ok(ms(500)));
        assert_eq!(parse_go_duration("+2s"), Ok(ms(2_000)));
        assert_eq!(parse_go_duration("-0s"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_go_duration("10µs"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_go_duration("10μs"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_go_duration("7ns"), Ok(Duration::from_nanos(7)));
    }

    #[test]
    fn refuses_malformed_values_with_a_reason() {
        assert_eq!(parse_go_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_go_duration("-"), Err(DurationError::ExpectedNumber));
        assert_eq!(parse_go_duration("3"), Err(DurationError::MissingUnit));
        assert_eq!(parse_go_duration("s"), Err(DurationError::ExpectedNumber));
        assert_eq!(parse_go_duration("."), Err(DurationError::ExpectedNumber));
        assert_eq!(
            parse_go_duration("3 s"),
            Err(DurationError::UnknownUnit(" s".into()))
        );
        assert_eq!(
            parse_go_duration("3sec"),
            Err(DurationError::UnknownUnit("sec".into()))
        );
        assert_eq!(parse_go_duration("-1s"), Err(DurationError::Negative));
        assert_eq!(
            parse_go_duration("9999999999h"),
            Err(DurationError::Overflow)
        );
        assert_eq!(
            parse_go_duration("99999999999999999999999999999999999ns"),
            Err(DurationError::Overflow)
        );
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_go_duration(Duration::ZERO), "0s");
        assert_eq!(format_go_duration(ms(100)), "100ms");
        assert_eq!(format_go_duration(ms(3_000)), "3s");
        assert_eq!(format_go_duration(ms(90_000)), "1m30s");
        assert_eq!(format_go_duration(ms(1_500)), "1.5s");
        assert_eq!(format_go_duration(ms(7_200_000)), "2h0m0s");
        assert_eq!(format_go_duration(Duration::from_nanos(1_500)), "1.5µs");
        assert_eq!(format_go_duration(Duration::from_nanos(12)), "12ns");
    }

    #[test]
    fn round_trips() {
        for text in [
            "0s", "100ms", "3s", "20s", "1m30s", "2h0m0s", "1.25s", "10µs",
        ] {
            let parsed = parse_go_duration(text).unwrap();
            assert_eq!(format_go_duration(parsed), text);
        }
    }
}
