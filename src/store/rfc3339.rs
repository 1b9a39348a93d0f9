//! RFC 3339 timestamps (`2026-11-26T15:04:05Z`) for the export format,
//! through `jiff` (a well-kept date-time crate) rather than hand-written
//! calendar arithmetic. The store keeps whole Unix seconds; the export
//! writes UTC with a `Z`, and import reads any RFC 3339 offset.

/// Earliest instant RFC 3339 can write (0000-01-01T00:00:00Z).
const MIN: i64 = -62_167_219_200;
/// Latest instant written: jiff's last timestamp (9999-12-30T22:00:00Z,
/// two hours short of RFC 3339's end, so that every offset stays in range).
const MAX: i64 = 253_402_207_200;

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC), clamped to
/// 0000-01-01T00:00:00Z..=9999-12-30T22:00:00Z (no torrent was discovered outside them).
pub fn format(unix_secs: i64) -> String {
    let t = unix_secs.clamp(MIN, MAX);
    match jiff::Timestamp::from_second(t) {
        Ok(ts) => ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        // Unreachable: jiff covers years -9999..=9999.
        Err(_) => String::from("1970-01-01T00:00:00Z"),
    }
}

/// Parses an RFC 3339 date-time into Unix seconds. Accepts `Z`/`z` or a
/// numeric `+HH:MM` offset, `T`/`t`/space as separator, and fractional
/// seconds (truncated: the store keeps whole seconds). Leap seconds (`:60`)
/// are refused: Unix time cannot represent them.
pub fn parse(s: &str) -> Result<i64, String> {
    // jiff also reads ISO 8601 forms RFC 3339 does not allow; refuse those
    // by shape first: a full date, a full time and an explicit offset.
    let b = s.as_bytes();
    let shape_ok = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't' | b' ')
        && b[13] == b':'
        && b[16] == b':'
        && (s.ends_with(['Z', 'z']) || s.len() >= 6 && s.as_bytes()[s.len() - 3] == b':');
    if !shape_ok {
        return Err(format!("{s:?} is not an RFC 3339 date-time"));
    }
    if b.get(17..19) == Some(b"60") {
        return Err("leap seconds are not supported".into());
    }
    let ts: jiff::Timestamp = s
        .replacen(['t', ' '], "T", 1)
        .replace('z', "Z")
        .parse()
        .map_err(|e: jiff::Error| e.to_string())?;
    Ok(ts.as_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        // Values cross-checked with `date -u -d @N +%Y-%m-%dT%H:%M:%SZ`.
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"), // leap day in a /400 year
            (951_868_799, "2000-02-29T23:59:59Z"),
            (1_709_164_800, "2024-02-29T00:00:00Z"), // ordinary leap year
            (1_709_251_200, "2024-03-01T00:00:00Z"),
            (4_107_542_400, "2100-03-01T00:00:00Z"), // 2100 is not a leap year
            (1_796_051_045, "2026-11-30T15:04:05Z"),
            (1_795_705_445, "2026-11-26T15:04:05Z"),
            (-1, "1969-12-31T23:59:59Z"),
            (-62_167_219_200, "0000-01-01T00:00:00Z"),
            (253_402_207_200, "9999-12-30T22:00:00Z"),
        ];
        for (secs, text) in cases {
            assert_eq!(format(secs), text, "format {secs}");
            assert_eq!(format(secs.saturating_add(1 << 40)).len(), 20);
            assert_eq!(parse(text), Ok(secs), "parse {text}");
        }
    }

    #[test]
    fn round_trips_every_day_for_a_few_centuries() {
        let mut t = -5_000_000_000i64;
        while t < 7_000_000_000 {
            assert_eq!(parse(&format(t)), Ok(t));
            t += 86_400 * 7 + 3_601;
        }
    }

    #[test]
    fn parse_variants_and_errors() {
        assert_eq!(parse("2026-11-26T16:04:05+01:00"), Ok(1_795_705_445));
        assert_eq!(parse("2026-11-26t15:04:05.999z"), Ok(1_795_705_445));
        assert_eq!(parse("2026-11-26 10:04:05-05:00"), Ok(1_795_705_445));
        for bad in [
            "2023-02-29T00:00:00Z", // not a leap year
            "2100-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T23:59:60Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00+0100",
            "2024-01-01T00:00:00.Z",
            "2024-1-01T00:00:00Z",
            "x024-01-01T00:00:00Z",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
