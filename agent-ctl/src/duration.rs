//! Human durations for `--timeout`: `500ms`, `5s`, `1.5s`, `2m`, bare seconds.

use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Parses `<number>[unit]`, unit one of `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`;
/// no unit means seconds. The number may have a decimal fraction.
pub fn parse(s: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("invalid duration {s:?}: {why}");
    let text = s.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_nanos: u128 = match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "" | "s" => NANOS_PER_SEC,
        "m" => 60 * NANOS_PER_SEC,
        "h" => 3600 * NANOS_PER_SEC,
        _ => return Err(bad("unit must be one of ns, us, ms, s, m, h")),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(bad("expected a number such as 500ms, 5s or 2m"));
    }
    if fraction.contains('.') {
        return Err(bad("more than one decimal point"));
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad("number too large"))?
    };
    // Fraction digits past nanosecond precision of the unit do not matter.
    let digits = &fraction[..fraction.len().min(18)];
    let mut fraction_nanos: u128 = 0;
    if !digits.is_empty() {
        let numerator: u128 = digits.parse().map_err(|_| bad("bad fraction"))?;
        let denominator = 10u128.pow(digits.len() as u32);
        fraction_nanos = numerator * unit_nanos / denominator;
    }
    let total = whole
        .checked_mul(unit_nanos)
        .and_then(|n| n.checked_add(fraction_nanos))
        .ok_or_else(|| bad("too large"))?;
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| bad("too large"))?;
    // The remainder is below 1e9 and so fits in u32.
    let nanos = (total % NANOS_PER_SEC) as u32;
    Ok(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("250µs"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("99ns"), Ok(Duration::from_nanos(99)));
        assert_eq!(parse(" 3s "), Ok(Duration::from_secs(3)));
    }

    #[test]
    fn fractions_are_exact() {
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("0.1"), Ok(Duration::from_millis(100)));
        assert_eq!(parse(".25s"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("2.5ms"), Ok(Duration::from_micros(2500)));
        assert_eq!(parse("1.0000000001s"), Ok(Duration::from_secs(1)));
    }

    #[test]
    fn bad_forms() {
        for (input, needle) in [
            ("", "expected a number"),
            ("s", "expected a number"),
            ("5x", "unit must be one of"),
            ("-5s", "unit must be one of"),
            ("5 s", "unit must be one of"),
            ("1.2.3s", "more than one decimal point"),
            ("99999999999999999999999999h", "too large"),
            ("1e3", "unit must be one of"),
        ] {
            match parse(input) {
                Ok(d) => panic!("{input:?} parsed as {d:?}"),
                Err(e) => {
                    assert!(e.contains(needle), "{input:?}: {e:?} lacks {needle:?}");
                    assert!(
                        e.contains(&format!("{input:?}")),
                        "{e:?} does not name the input"
                    );
                }
            }
        }
    }
}
