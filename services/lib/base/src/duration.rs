//! Durations as every settings file and flag writes them: a whole number and a unit, `250ms`,
//! `30s`, `5m`, `24h`, `7d`. One reading for the gateway and every service.

use std::time::Duration;

/// Parses `<whole number><unit>` with unit `ms`, `s`, `m`, `h` or `d`; the error is a sentence
/// naming what was given.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let bad = || format!("expected a duration such as \"30s\", \"5m\" or \"24h\", got {text:?}");
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let secs = |mult: u64| n.checked_mul(mult).map(Duration::from_secs).ok_or_else(bad);
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse(" 30s "), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in ["5", "-5s", "5 s", "1.5s", "s", "", "99999999999999999999d", "5w"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
