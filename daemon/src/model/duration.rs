//! Durations as an operator writes them: `250ms`, `1.5s`, `90s`, `30m`,
//! `1h30m`, `2d`; a bare number is seconds. One parser for every flag that
//! takes a duration (the CLI's `--timeout`, a join token's `--ttl`).

use std::time::Duration;

/// Parses `s` as a sum of `<number><unit>` terms (units `ms`, `s`, `m`, `h`,
/// `d`; numbers may have a fraction), or one bare number of seconds.
/// The result must be more than 0 and at most `max`.
///
/// # Errors
/// A message naming the input and what to write instead.
pub fn parse_duration(s: &str, max: Duration) -> Result<Duration, String> {
    let t = s.trim();
    let example = "write e.g. 500ms, 1.5s, 90s, 30m or 1h30m";
    if t.is_empty() {
        return Err(format!("{s:?} is not a duration: {example}"));
    }
    let mut rest = t;
    let mut secs = 0.0_f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a duration: {example}"))?;
        let unit_len = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            // A bare number stands alone: `90` is 90 s, `1h30` is refused.
            "" if num_len == t.len() => 1.0,
            "" => return Err(format!("{s:?}: give each number a unit; {example}")),
            u => return Err(format!("{s:?}: unknown unit {u:?}; use ms, s, m, h or d")),
        };
        secs += n * scale;
        rest = next;
    }
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("{s:?}: a duration must be longer than 0"));
    }
    let d = Duration::from_secs_f64(secs.min(max.as_secs_f64() * 2.0));
    if d > max {
        return Err(format!("{s:?}: at most {}", describe(max)));
    }
    Ok(d)
}

/// `max` in the largest whole unit, for error messages.
fn describe(max: Duration) -> String {
    let s = max.as_secs();
    match s {
        0 => format!("{}ms", max.as_millis()),
        _ if s % 86_400 == 0 => format!("{}d", s / 86_400),
        _ if s % 3600 == 0 => format!("{}h", s / 3600),
        _ if s % 60 == 0 => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn units_fractions_sums_and_bare_seconds() {
        let ok = |s| parse_duration(s, 7 * DAY);
        assert_eq!(ok("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(ok("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(ok("2"), Ok(Duration::from_secs(2)));
        assert_eq!(ok("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(ok("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(ok(" 2d "), Ok(2 * DAY));
        assert_eq!(ok("1m500ms"), Ok(Duration::from_millis(60_500)));
    }

    #[test]
    fn nonsense_zero_and_too_long_are_refused_with_a_hint() {
        for bad in [
            "", "0", "0s", "-1s", "1x", "s", "h", "1.2.3s", "1h30", "1h 2m", "8d", "1e3s",
        ] {
            let e = parse_duration(bad, 7 * DAY).expect_err(bad);
            assert!(e.contains(&format!("{bad:?}")), "{bad:?}: {e}");
        }
        assert_eq!(
            parse_duration("48h", DAY),
            Err("\"48h\": at most 1d".to_owned())
        );
        // Huge inputs neither panic nor overflow.
        assert!(parse_duration("99999999999999999999999d", DAY).is_err());
    }
}
