//! UTC calendar dates (`YYYY-MM-DD`) as day numbers, for the daily keys of
//! docs/contract.md section 4 and the `--date` / `--from` / `--to` arguments.

use std::time::UNIX_EPOCH;

use crate::events::counters::date_of;
use crate::time::DAY_MS;

/// Days since 1970-01-01 of a strict `YYYY-MM-DD` date; `None` when the text
/// is not one (wrong shape, or a day the calendar lacks such as 02-30).
pub fn parse(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shaped {
        return None;
    }
    let at = humantime::parse_rfc3339(&format!("{text}T00:00:00Z")).ok()?;
    let day = at.duration_since(UNIX_EPOCH).ok()?.as_secs() / 86_400;
    // humantime accepts some impossible days; a round trip rejects them.
    (date_of(day) == text).then_some(day)
}

/// Today's day number, UTC.
pub fn today() -> u64 {
    crate::time::now_ms() / DAY_MS
}

/// `YYYY-MM-DD` of a day number.
pub fn format(day: u64) -> String {
    date_of(day)
}

/// The day number of a timestamp in milliseconds.
pub fn day_of_ms(ms: u64) -> u64 {
    ms / DAY_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_impossible_days_are_refused() {
        let day = parse("2025-11-25").unwrap();
        assert_eq!(format(day), "2025-11-25");
        assert_eq!(
            parse("2024-02-29").map(format).as_deref(),
            Some("2024-02-29")
        );
        for bad in [
            "2025-02-30",
            "2025-13-01",
            "25-11-25",
            "2025/11/25",
            "2025-11-25x",
            "",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
