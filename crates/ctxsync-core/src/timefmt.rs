//! Times as the documents and the CLI show them: RFC 3339 UTC with milliseconds
//! (`2024-03-01T00:00:00.123Z`), computed from epoch milliseconds without a clock or a
//! time-zone database, so the core stays pure.

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` from epoch milliseconds (civil-from-days, proleptic
/// Gregorian).
pub fn rfc3339_millis(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps() {
        assert_eq!(super::rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339_millis(1_709_251_200_123),
            "2024-03-01T00:00:00.123Z"
        );
        assert_eq!(
            super::rfc3339_millis(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
    }
}
