//! Time in one place: the wall clock in milliseconds since the Unix epoch,
//! and its RFC 3339 form (the search log's timestamps).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One day, the unit of the daily keys (`YYYY-MM-DD`, UTC).
pub const DAY_MS: u64 = 86_400_000;

/// `YYYY-MM-DD` (UTC) of the day `ms` falls in.
pub fn utc_date(ms: u64) -> String {
    let t = rfc3339_ms(ms);
    t.get(..10).unwrap_or(&t).to_owned()
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339_ms(ms: u64) -> String {
    let mut buf = [0; RFC3339_MS_LEN];
    match rfc3339_ms_into(ms, &mut buf) {
        Some(s) => s.to_owned(),
        None => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
    }
}

/// Length of [`rfc3339_ms_into`]'s output: `2026-11-25T21:27:36.927Z`.
pub const RFC3339_MS_LEN: usize = 24;

/// Formats `ms` since the Unix epoch into `buf` without allocating (once
/// per logged search, so it is on the writer's hot path). `None` past the
/// year 9999, where the format needs more digits.
pub fn rfc3339_ms_into(ms: u64, buf: &mut [u8; RFC3339_MS_LEN]) -> Option<&str> {
    let days = i64::try_from(ms / 86_400_000).ok()?;
    let in_day = ms % 86_400_000;
    let (year, month, day) = civil_from_days(days);
    if year > 9999 {
        return None;
    }
    let (year, month, day) = (year as u64, month as u64, day as u64);
    let mut put = |at: usize, value: u64, width: usize| {
        let mut v = value;
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, in_day / 3_600_000, 2);
    put(14, in_day / 60_000 % 60, 2);
    put(17, in_day / 1000 % 60, 2);
    put(20, in_day % 1000, 3);
    for (at, sep) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ] {
        buf[at] = sep;
    }
    std::str::from_utf8(buf).ok()
}

/// The calendar date of a day number since 1970-01-01: (year, month, day).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_millis() {
        assert_eq!(rfc3339_ms(1_764_106_056_927), "2025-11-25T21:27:36.927Z");
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn the_fast_formatter_agrees_with_humantime() {
        let mut ms: u64 = 0;
        // Every day boundary region of 1970-2200 and odd milliseconds.
        while ms < 7_258_118_400_000 {
            for probe in [ms, ms + 1, ms + 86_399_999, ms + 43_261_001] {
                let expected =
                    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(probe))
                        .to_string();
                assert_eq!(rfc3339_ms(probe), expected, "{probe}");
            }
            ms += 86_400_000 * 13 + 7;
        }
        assert_eq!(rfc3339_ms(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        let mut buf = [0; RFC3339_MS_LEN];
        assert_eq!(rfc3339_ms_into(253_402_300_800_000, &mut buf), None);
    }
}
