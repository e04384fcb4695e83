//! Human-readable durations for the config file: `250ms`, `5s`, `1m30s`, `6h`, `1d`.

use std::time::Duration;

/// Parses a duration written as one or more `<integer><unit>` parts, units `ms`, `s`, `m`, `h`,
/// `d`. A bare number is rejected on purpose: `5` could mean seconds or milliseconds, and a
/// wrong guess in a failure detector is exactly the mistake this config must not allow.
pub fn parse(text: &str) -> Result<Duration, String> {
    parse_up_to(text, MAX)
}

/// [`parse`] for a cadence on the calendar (how often to rehearse DR: a quarter, a year), the
/// one kind of setting that means something past [`MAX`]; at most [`CALENDAR_MAX`].
pub fn parse_cadence(text: &str) -> Result<Duration, String> {
    parse_up_to(text, CALENDAR_MAX)
}

fn parse_up_to(text: &str, max: Duration) -> Result<Duration, String> {
    let hint = "expected a number followed by ms, s, m, h or d (e.g. \"250ms\", \"5s\", \"1m30s\")";
    let s = text.trim();
    if s.is_empty() {
        return Err(format!("empty duration: {hint}"));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("invalid duration {text:?}: {hint}"));
        }
        let value: u64 = rest[..digits].parse().map_err(|_| format!("invalid duration {text:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            "d" => Duration::from_secs(value.saturating_mul(86400)),
            "" => return Err(format!("invalid duration {text:?}: missing unit; {hint}")),
            other => return Err(format!("invalid duration {text:?}: unknown unit {other:?}; {hint}")),
        };
        total = total.saturating_add(part);
    }
    if total > max {
        return Err(format!("duration {text:?} is longer than the maximum of {}", format(max)));
    }
    Ok(total)
}

/// A duration field as the config file gives it, kept as text for [`parse`] to judge with every
/// other problem of the file. A bare number (`hold_down = 2`) is kept as its digits, so that it
/// is refused with the unit hint, where a TOML type error would stop the file at the first.
pub(crate) fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = String;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a duration such as \"250ms\", \"5s\" or \"1m30s\"")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(Text).map(Some)
}

/// No setting of this program means anything beyond this but a cadence; rejecting larger
/// values keeps every computation on durations (sums, multiples) far from overflow.
pub const MAX: Duration = Duration::from_secs(30 * 86400);

/// The longest cadence: a little over a year.
pub const CALENDAR_MAX: Duration = Duration::from_secs(400 * 86400);

/// Formats a duration the way `parse` reads it, choosing the largest exact unit.
pub fn format(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    for (unit, size) in [("d", 86_400_000u128), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_compounds() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("6h"), Ok(Duration::from_secs(6 * 3600)));
        assert_eq!(parse(" 1d "), Ok(Duration::from_secs(86400)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_ambiguous_or_malformed() {
        for bad in ["", "5", "5 s", "s", "5sec", "1.5s", "-1s", "ms5"] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse("5").unwrap_err().contains("missing unit"));
        assert!(parse("31d").unwrap_err().contains("maximum"));
        assert!(parse("18446744073709551615s").is_err());
        assert_eq!(parse("30d"), Ok(MAX));
    }

    #[test]
    fn format_round_trips() {
        for ms in [0u64, 1, 250, 1000, 1500, 60_000, 90_000, 3_600_000, 21_600_000, 86_400_000] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
