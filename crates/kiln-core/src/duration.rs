//! Trigger.dev's duration strings: one or more `<number><unit>` parts, units
//! `w`, `d`, `h` (or `hr`), `m`, `s` and `ms`, as in `"30s"`, `"1h30m"`,
//! `"40d"`. Used by `delay`, `ttl` and `idempotencyKeyTTL`.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a duration (use a number and a unit: \"30s\", \"10m\", \"2h\", \"40d\", \"1w\")")]
pub struct InvalidDuration(pub String);

/// The longest duration kiln accepts anywhere: 10 years.
pub const MAX: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

pub fn parse(text: &str) -> Result<Duration, InvalidDuration> {
    let invalid = || InvalidDuration(text.to_owned());
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(invalid());
    }
    let mut total_ms: u128 = 0;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 12 {
            return Err(invalid());
        }
        let number: u128 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms: u128 = match &rest[..unit_len] {
            "w" => 7 * 86_400_000,
            "d" => 86_400_000,
            "h" | "hr" => 3_600_000,
            "m" => 60_000,
            "s" => 1_000,
            "ms" => 1,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        total_ms += number * unit_ms;
    }
    let duration = Duration::from_millis(u64::try_from(total_ms).map_err(|_| invalid())?);
    if duration > MAX {
        return Err(invalid());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_trigger_durations() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse("40d"), Ok(Duration::from_secs(40 * 86_400)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse("2hr"), Ok(Duration::from_secs(7_200)));
        assert_eq!(parse("1w"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn rejects_garbage() {
        for text in ["", "s", "10", "10x", "-5s", "1.5h", "99999999999999d", "3 s"] {
            assert!(parse(text).is_err(), "{text} should be rejected");
        }
    }
}
