//! Durations as Flagger (Go's `time.ParseDuration`) writes them: `90s`, `1m30s`, `1.5h`, `500ms`, `250us`.

use std::time::Duration;

/// Nanoseconds per unit, longest unit names first where one is a prefix of another.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("\u{b5}s", 1_000),
    ("\u{3bc}s", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses a Go duration; `None` for anything else (a bare number other than `0`, an unknown unit, a sign:
/// no fledge duration is negative).
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut nanos: u128 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
            return None;
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale = UNITS.iter().find(|(name, _)| *name == unit)?.1;
        let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
        nanos = nanos.checked_add(whole.checked_mul(scale)?)?;
        // The fraction, digit by digit, so 1.5h is exact and no float rounding creeps in.
        let mut place = scale;
        for digit in fraction.bytes() {
            place /= 10;
            nanos = nanos.checked_add(u128::from(digit - b'0') * place)?;
        }
        rest = next;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    let sub = u32::try_from(nanos % 1_000_000_000).ok()?;
    Some(Duration::new(secs, sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_flagger_users_write_are_accepted() {
        let secs = |t: &str| parse_go_duration(t).map(|d| d.as_secs_f64());
        assert_eq!(secs("90s"), Some(90.0));
        assert_eq!(secs("1m30s"), Some(90.0));
        assert_eq!(secs("1h"), Some(3600.0));
        assert_eq!(secs("1.5h"), Some(5400.0));
        assert_eq!(secs("2h45m"), Some(9900.0));
        assert_eq!(secs("500ms"), Some(0.5));
        assert_eq!(secs(".5s"), Some(0.5));
        assert_eq!(secs("0"), Some(0.0));
        assert_eq!(parse_go_duration("250us"), Some(Duration::from_micros(250)));
        assert_eq!(parse_go_duration("10ns"), Some(Duration::from_nanos(10)));
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "", "10", "soon", "-1s", "+1s", "1d", "1.2.3s", "s", "1 s", "1m30", ".",
        ] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }
}
