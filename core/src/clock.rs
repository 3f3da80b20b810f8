//! Wall-clock timestamps as they appear on the wire: RFC 3339, UTC, millisecond precision.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The current time as RFC 3339 with milliseconds, e.g. `2026-11-26T07:00:00.123Z`.
pub fn now_rfc3339() -> String {
    format_rfc3339(OffsetDateTime::now_utc())
}

/// Formats a UTC time as RFC 3339 with milliseconds.
pub fn format_rfc3339(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let truncated = at
        .replace_nanosecond(at.millisecond() as u32 * 1_000_000)
        .unwrap_or(at);
    truncated
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// Parses an RFC 3339 timestamp.
pub fn parse_rfc3339(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// RFC 3339 of now plus `delay`.
pub fn rfc3339_after(delay: std::time::Duration) -> String {
    format_rfc3339(OffsetDateTime::now_utc() + delay)
}

/// Whether the RFC 3339 instant `deadline` is still in the future (unparseable: no).
pub fn is_future(deadline: &str) -> bool {
    parse_rfc3339(deadline).is_some_and(|at| at > OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Formatting round-trips through parsing at millisecond precision.
    #[test]
    fn round_trip() {
        let now = now_rfc3339();
        assert!(now.ends_with('Z'));
        let parsed = parse_rfc3339(&now).expect("parse");
        assert_eq!(format_rfc3339(parsed), now);
    }
}
