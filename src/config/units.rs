//! Humane durations ("50ms", "1h30m", "90d") and sizes ("64KiB", "1GiB").
//!
//! Written here rather than taken from `humantime` because humantime's error
//! messages cannot name the units we accept and it reads "1d" differently from
//! what an operator means by a retention of days; thirty lines buy exact errors.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::values::Checked;

const DURATION_HINT: &str = "use a number with ms, s, m, h or d";
const SIZE_HINT: &str = "use a number with B, KB, MB, GB, KiB, MiB or GiB";

/// Parses `"1h30m"`, `"50ms"`, `"90d"`, `"250us"`: one or more integer/unit pairs.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?} ({DURATION_HINT})");
    let s = text.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid duration {text:?} (add a unit, e.g. \"{s}s\"; units: ms, s, m, h, d)"
        ));
    }
    let too_large = || format!("invalid duration {text:?} (too large)");
    let mut rest = s;
    let mut nanos: u128 = 0;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let number: u128 = rest[..digits].parse().map_err(|_| too_large())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_nanos: u128 = match &rest[..unit_len] {
            "us" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            "d" => 86_400 * 1_000_000_000,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        nanos = number
            .checked_mul(unit_nanos)
            .and_then(|n| n.checked_add(nanos))
            .ok_or_else(too_large)?;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| too_large())?;
    let subsec = u32::try_from(nanos % 1_000_000_000).expect("a remainder of 1e9 fits in u32");
    Ok(Duration::new(secs, subsec))
}

/// Parses `"64KiB"`, `"1 MB"`, `"512B"`, `"0"`. KB/MB/GB are powers of 1000,
/// KiB/MiB/GiB powers of 1024, units case-insensitive, a plain number is bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let invalid = || format!("invalid size {text:?} ({SIZE_HINT})");
    let s = text.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(invalid());
    }
    let number: u64 = s[..digits].parse().map_err(|_| invalid())?;
    let unit = s[digits..].trim_start().to_ascii_lowercase();
    let multiplier: u64 = match unit.as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(invalid()),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("invalid size {text:?} (too large)"))
}

/// A duration field of proxy.toml.
#[derive(Clone, Copy, Debug)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Checked {
            expected: "a duration such as \"10s\"",
            text: Some(|s| parse_duration(s).map(Dur)),
            // A bare `ttl = 5` gets "add a unit", not serde's "expected a string".
            integer: Some(|n| {
                Err(format!(
                    "invalid duration {n} (write it as a string with a unit, e.g. \"{n}s\")"
                ))
            }),
        })
    }
}

/// A byte-size field of proxy.toml; a TOML integer counts bytes.
#[derive(Clone, Copy, Debug)]
pub struct Size(pub u64);

impl Size {
    /// For fields held as `usize` (buffer lengths).
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Checked {
            expected: "a size such as \"64KiB\"",
            text: Some(|s| parse_size(s).map(Size)),
            integer: Some(|n| {
                u64::try_from(n)
                    .map(Size)
                    .map_err(|_| format!("invalid size {n} (must not be negative)"))
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_every_unit() {
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
    }

    #[test]
    fn durations_add_up_compound_parts() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn bare_integer_duration_asks_for_a_unit() {
        let err = parse_duration("5").unwrap_err();
        assert!(err.contains("add a unit"), "{err}");
    }

    #[test]
    fn unknown_duration_unit_names_the_allowed_units() {
        assert_eq!(
            parse_duration("5 parsecs").unwrap_err(),
            r#"invalid duration "5 parsecs" (use a number with ms, s, m, h or d)"#
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("1.5h").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn huge_durations_are_rejected_not_wrapped() {
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_duration("213503982334602d").is_err());
        assert_eq!(
            parse_duration("5000000000us"),
            Ok(Duration::from_secs(5000))
        );
    }

    #[test]
    fn sizes_know_decimal_and_binary_units() {
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2KB"), Ok(2000));
        assert_eq!(parse_size("3MB"), Ok(3_000_000));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
    }

    #[test]
    fn size_units_are_case_insensitive_and_may_follow_a_space() {
        assert_eq!(parse_size("64kib"), Ok(64 * 1024));
        assert_eq!(parse_size("1 MIB"), Ok(1 << 20));
    }

    #[test]
    fn bad_sizes_name_the_allowed_units() {
        let err = parse_size("12 parsecs").unwrap_err();
        assert!(err.contains("KiB"), "{err}");
        assert!(parse_size("KiB").is_err());
        assert!(parse_size("99999999999GiB").is_err());
    }
}
