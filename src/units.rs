//! Units as people write them in flags, environment variables and files: counts (`5_000`),
//! durations (`500ms`, `1m30s`, a bare number of seconds), sizes (`10MiB`, `2GB`) and
//! booleans, each parsed within bounds into a message that says what was expected, and
//! formatted back the way they are written.

use std::time::Duration;

/// `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`, any case.
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// A whole number within `min..=max`; `_` may group digits.
pub fn parse_count(value: &str, min: usize, max: usize) -> Result<usize, String> {
    let n: usize = value
        .trim()
        .replace('_', "")
        .parse()
        .map_err(|_| "expected a whole number".to_string())?;
    if n < min || n > max {
        return Err(format!("must be between {min} and {max}"));
    }
    Ok(n)
}

/// A duration such as `500ms`, `20s`, `1m` or `1m30s`; a bare number is seconds (as the log
/// monitoring seed's FLUSHINTERVAL was). At most an hour.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    parse_duration_between(value, Duration::from_nanos(1), Duration::from_secs(3600))
}

/// A duration as [`parse_duration`] reads it, within `min..=max`.
pub fn parse_duration_between(
    value: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, String> {
    let value = value.trim();
    let duration = if value.chars().all(|c| c.is_ascii_digit()) && !value.is_empty() {
        Duration::from_secs(value.parse().map_err(|_| "number too large".to_string())?)
    } else {
        humantime::parse_duration(value)
            .map_err(|e| format!("{e}; expected e.g. 500ms, 20s or 1m"))?
    };
    if duration.is_zero() {
        return Err("must be longer than zero".into());
    }
    if duration < min {
        return Err(format!("must be at least {}", format_duration(min)));
    }
    if duration > max {
        return Err(format!("must be at most {}", format_duration(max)));
    }
    Ok(duration)
}

/// A size in bytes: a number with an optional unit (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB),
/// within `min..=max`.
pub fn parse_size(value: &str, min: u64, max: u64) -> Result<u64, String> {
    let value = value.trim().replace('_', "");
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| "expected a size such as 1048576, 512KiB or 10MiB".to_string())?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "tib" | "t" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown unit `{other}` (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
            ));
        }
    };
    let bytes = number
        .checked_mul(multiplier)
        .ok_or_else(|| "too large".to_string())?;
    if bytes < min || bytes > max {
        return Err(format!("must be between {min} and {max} bytes"));
    }
    Ok(bytes)
}

/// A duration as people write it: `500ms`, `1m`, `24h`.
pub fn format_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

/// A size in the largest binary unit that divides it: `10MiB`, `1KiB`, `1500`.
pub fn format_size(bytes: u64) -> String {
    for (unit, size) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

/// A size for people to read, to one decimal in the largest binary unit it reaches:
/// `3.4 MiB`, `512 B`.
pub fn format_size_approx(bytes: u64) -> String {
    for (unit, size) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= size {
            return format!("{:.1} {unit}", bytes as f64 / size as f64);
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_approximately() {
        assert_eq!(format_size_approx(512), "512 B");
        assert_eq!(format_size_approx(3 * 1024 * 1024 + 400 * 1024), "3.4 MiB");
        assert_eq!(format_size_approx(100 << 20), "100.0 MiB");
    }

    #[test]
    fn durations_and_sizes_parse_and_format_back() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_size("10MiB", 1, u64::MAX), Ok(10 << 20));
        assert_eq!(parse_size("512 KiB", 1, u64::MAX), Ok(512 << 10));
        assert_eq!(parse_size("1_000", 1, u64::MAX), Ok(1000));
        assert_eq!(parse_size("2MB", 1, u64::MAX), Ok(2_000_000));
        assert_eq!(parse_size("1TiB", 1, u64::MAX), Ok(1 << 40));
        assert!(parse_size("10 parsecs", 1, u64::MAX).is_err());
        assert!(parse_size("-1", 1, u64::MAX).is_err());
        assert!(parse_size("99999999999999GiB", 1, u64::MAX).is_err());
        assert_eq!(format_size(10 << 20), "10MiB");
        assert_eq!(format_size(1024), "1KiB");
        assert_eq!(format_size(1500), "1500");
        assert_eq!(format_duration(Duration::from_secs(86_400)), "1day");
        assert_eq!(parse_count("5_000", 1, 10_000), Ok(5000));
        assert!(parse_count("0", 1, 10).is_err());
        assert_eq!(parse_bool("On"), Ok(true));
    }
}
