//! HTTP-date (RFC 9110 section 5.6.7): the three formats a recipient must
//! accept, and the one a sender generates.
//!
//! ```text
//! IMF-fixdate  Sun, 06 Nov 1994 08:49:37 GMT
//! RFC 850      Sunday, 06-Nov-94 08:49:37 GMT
//! asctime      Sun Nov  6 08:49:37 1994
//! ```
//!
//! Names (days, months, `GMT`) are compared case-insensitively, as RFC 9110
//! asks recipients to be lenient where they can; anything else that does not
//! fit one of the three forms is invalid, and the caller decides what invalid
//! means (for `Expires`, "already expired").

use crate::time::civil_from_days;

/// Seconds since the Unix epoch (negative before 1970).
pub type UnixSecs = i64;

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const LONG_DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Parses an HTTP-date in any of the three formats.
pub fn parse(value: &str) -> Option<UnixSecs> {
    let v = value.trim_matches([' ', '\t']);
    parse_imf_fixdate(v)
        .or_else(|| parse_rfc850(v))
        .or_else(|| parse_asctime(v))
}

/// Parses the single field line of a header that holds one HTTP-date; two
/// lines, or a value that is not text, are invalid.
pub fn parse_header(headers: &http::HeaderMap, name: http::header::HeaderName) -> DateField {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return DateField::Absent;
    };
    if values.next().is_some() {
        return DateField::Invalid;
    }
    match first.to_str().ok().and_then(parse) {
        Some(t) => DateField::Valid(t),
        None => DateField::Invalid,
    }
}

/// What a date header held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DateField {
    Absent,
    Invalid,
    Valid(UnixSecs),
}

impl DateField {
    pub fn valid(self) -> Option<UnixSecs> {
        match self {
            DateField::Valid(t) => Some(t),
            _ => None,
        }
    }
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`
fn parse_imf_fixdate(v: &str) -> Option<UnixSecs> {
    let (day, rest) = v.split_once(", ")?;
    weekday(day, &DAYS)?;
    let b = rest.as_bytes();
    // "06 Nov 1994 08:49:37 GMT"
    if b.len() != 24 || b[2] != b' ' || b[6] != b' ' || b[11] != b' ' || b[20] != b' ' {
        return None;
    }
    let mday = digits(&rest[0..2])?;
    let month = month(&rest[3..6])?;
    let year = digits(&rest[7..11])?;
    let (h, m, s) = time_of_day(&rest[12..20])?;
    gmt(&rest[21..24])?;
    to_unix(year, month, mday, h, m, s)
}

/// `Sunday, 06-Nov-94 08:49:37 GMT`
fn parse_rfc850(v: &str) -> Option<UnixSecs> {
    let (day, rest) = v.split_once(", ")?;
    weekday(day, &LONG_DAYS)?;
    let b = rest.as_bytes();
    // "06-Nov-94 08:49:37 GMT"
    if b.len() != 22 || b[2] != b'-' || b[6] != b'-' || b[9] != b' ' || b[18] != b' ' {
        return None;
    }
    let mday = digits(&rest[0..2])?;
    let month = month(&rest[3..6])?;
    let yy = digits(&rest[7..9])?;
    let (h, m, s) = time_of_day(&rest[10..18])?;
    gmt(&rest[19..22])?;
    // RFC 9110: a two-digit year more than 50 years in the future means the
    // most recent past year with those digits.
    let this_year = current_year();
    let mut year = (this_year / 100) * 100 + yy;
    if year > this_year + 50 {
        year -= 100;
    }
    to_unix(year, month, mday, h, m, s)
}

/// `Sun Nov  6 08:49:37 1994`
fn parse_asctime(v: &str) -> Option<UnixSecs> {
    let b = v.as_bytes();
    if b.len() != 24 || b[3] != b' ' || b[7] != b' ' || b[10] != b' ' || b[19] != b' ' {
        return None;
    }
    weekday(&v[0..3], &DAYS)?;
    let month = month(&v[4..7])?;
    let mday = match &v[8..10] {
        d if d.starts_with(' ') => digits(&d[1..])?,
        d => digits(d)?,
    };
    let (h, m, s) = time_of_day(&v[11..19])?;
    let year = digits(&v[20..24])?;
    to_unix(year, month, mday, h, m, s)
}

fn weekday(name: &str, names: &[&str; 7]) -> Option<()> {
    names
        .iter()
        .any(|d| d.eq_ignore_ascii_case(name))
        .then_some(())
}

fn month(name: &str) -> Option<i64> {
    MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(name))
        .map(|i| i as i64 + 1)
}

fn gmt(s: &str) -> Option<()> {
    s.eq_ignore_ascii_case("GMT").then_some(())
}

fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `08:49:37`
fn time_of_day(s: &str) -> Option<(i64, i64, i64)> {
    let b = s.as_bytes();
    if b.len() != 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let (h, m, sec) = (digits(&s[0..2])?, digits(&s[3..5])?, digits(&s[6..8])?);
    // 60 is a leap second.
    (h < 24 && m < 60 && sec <= 60).then_some((h, m, sec))
}

fn to_unix(year: i64, month: i64, mday: i64, h: i64, m: i64, s: i64) -> Option<UnixSecs> {
    if !(1..=12).contains(&month) || mday < 1 || mday > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, mday) * 86_400 + h * 3600 + m * 60 + s)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn current_year() -> i64 {
    let now = crate::time::now_ms() as i64 / 1000;
    civil_from_days(now.div_euclid(86_400)).0
}

/// Formats an IMF-fixdate, the form a sender generates.
pub fn format(t: UnixSecs) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    // 1970-01-01 was a Thursday (index 3 from Monday).
    let weekday = DAYS[(days + 3).rem_euclid(7) as usize];
    format!(
        "{weekday}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        MONTHS[(m - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RFC_EXAMPLE: UnixSecs = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT

    #[test]
    fn the_three_formats_of_rfc_9110_name_the_same_instant() {
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT"), Some(RFC_EXAMPLE));
        assert_eq!(parse("Sunday, 06-Nov-94 08:49:37 GMT"), Some(RFC_EXAMPLE));
        assert_eq!(parse("Sun Nov  6 08:49:37 1994"), Some(RFC_EXAMPLE));
    }

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(parse("SUN, 06 NOV 1994 08:49:37 gmt"), Some(RFC_EXAMPLE));
    }

    #[test]
    fn malformed_dates_are_invalid() {
        for bad in [
            "0",
            "",
            "Thu, 18 Aug 2050 02:01:18 UTC",
            "Thu, 18 Aug 2050 02:01:18 AEST",
            "Thu 18 Aug 2050 02:01:18 GMT",
            "Thu, 18  Aug  2050 02:01:18 GMT",
            "Thu, 18-Aug-2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02.01.18 GMT",
            "Thu, 18 Aug 2050 2:01:18 GMT",
            "Thu, 18 Aug 50 02:01:18 GMT",
            "Thu, 31 Feb 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 25:01:18 GMT",
            "Xyz, 18 Aug 2050 02:01:18 GMT",
        ] {
            assert_eq!(parse(bad), None, "{bad:?} parsed");
        }
    }

    #[test]
    fn two_digit_years_stay_within_fifty_years_ahead() {
        let far = parse("Thursday, 18-Aug-50 02:01:18 GMT").expect("valid rfc 850");
        let (year, _, _) = civil_from_days(far.div_euclid(86_400));
        let now = current_year();
        assert!(year <= now + 50 && year > now - 50, "{year}");
    }

    #[test]
    fn dates_past_2038_and_before_1970_work() {
        assert_eq!(parse("Tue, 19 Jan 2038 03:14:08 GMT"), Some(1 << 31));
        assert_eq!(parse("Wed, 31 Dec 1969 23:59:59 GMT"), Some(-1));
        assert!(parse("Sun, 21 Nov 2286 04:46:39 GMT").is_some());
    }

    #[test]
    fn formats_imf_fixdate() {
        assert_eq!(format(RFC_EXAMPLE), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(format(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn two_field_lines_are_invalid() {
        let mut h = http::HeaderMap::new();
        h.append("expires", "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap());
        assert_eq!(
            parse_header(&h, http::header::EXPIRES),
            DateField::Valid(RFC_EXAMPLE)
        );
        h.append("expires", "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap());
        assert_eq!(parse_header(&h, http::header::EXPIRES), DateField::Invalid);
        assert_eq!(parse_header(&h, http::header::DATE), DateField::Absent);
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(t in -2_000_000_000i64..20_000_000_000i64) {
            let text = format(t);
            prop_assert_eq!(parse(&text), Some(t));
            // The asctime rendering of the same instant parses to it too.
            let imf = &text[5..];
            let (d, rest) = imf.split_at(2);
            let mon = &rest[1..4];
            let year = &rest[5..9];
            let time = &rest[10..18];
            let mday: i64 = d.parse().unwrap();
            let asctime = format!("{} {mon} {mday:>2} {time} {year}", &text[0..3]);
            prop_assert_eq!(parse(&asctime), Some(t));
        }

        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse(&s);
        }
    }
}
