//! Parsers for human-written scalar values: durations (`250ms`, `1m30s`) and percentages (`20%`).

use std::time::Duration;

/// Parses a duration such as `250ms`, `2s`, `1m30s`, `1h` or `1d`. A bare `0` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| format!("`{text}` has a number without a unit"))?;
        if digits == 0 {
            return Err(format!("`{text}` does not start with a number"));
        }
        let number: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{}` is not a number", &rest[..digits]))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs_per_unit = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            other => return Err(format!("`{other}` is not a duration unit")),
        };
        let part = number * secs_per_unit;
        if !part.is_finite() || part > 1e10 {
            return Err(format!("`{text}` is too large"));
        }
        total += Duration::from_secs_f64(part);
    }
    Ok(total)
}

/// Parses a percentage such as `20%` or `12.5%` into per mille (200, 125).
pub fn parse_percent_permille(text: &str) -> Result<u32, String> {
    let number = text
        .trim()
        .strip_suffix('%')
        .ok_or_else(|| format!("`{text}` is not a percentage (it must end with `%`)"))?;
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a percentage"))?;
    if !(0.0..=100.0).contains(&value) {
        return Err(format!("`{text}` is outside 0%..100%"));
    }
    Ok((value * 10.0).round() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("ms").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn percentages() {
        assert_eq!(parse_percent_permille("20%"), Ok(200));
        assert_eq!(parse_percent_permille("12.5%"), Ok(125));
        assert!(parse_percent_permille("20").is_err());
        assert!(parse_percent_permille("120%").is_err());
    }
}
