//! RFC 3339 timestamps (`2026-11-26T15:04:05Z`) and lowercase hex, by hand.
//!
//! The export format needs exactly one timestamp shape and one hex shape; a
//! date-time crate would be a large dependency for forty lines of arithmetic.
//! Day counting uses Howard Hinnant's `days_from_civil` / `civil_from_days`
//! algorithms (proleptic Gregorian calendar, exact for all i64 day counts that
//! map to years 0000..=9999, which is all RFC 3339 can express).

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC). Years outside
/// 0000..=9999 are clamped to that range, since RFC 3339 cannot express them.
pub fn format(unix_secs: i64) -> String {
    const MIN: i64 = -62_167_219_200; // 0000-01-01T00:00:00Z
    const MAX: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let t = unix_secs.clamp(MIN, MAX);
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Parses an RFC 3339 date-time into Unix seconds. Accepts `Z`/`z` or a
/// numeric offset, `T`/`t`/space as separator, and fractional seconds (which
/// are truncated: the store keeps whole seconds). Leap seconds (`:60`) are
/// rejected because Unix time cannot represent them.
pub fn parse(s: &str) -> Result<i64, &'static str> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return Err("too short for an RFC 3339 date-time");
    }
    let num = |range: std::ops::Range<usize>| -> Result<i64, &'static str> {
        let digits = &b[range];
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err("expected digits");
        }
        Ok(digits
            .iter()
            .fold(0i64, |acc, &d| acc * 10 + i64::from(d - b'0')))
    };
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err("expected YYYY-MM-DDTHH:MM:SS");
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) {
        return Err("month out of range");
    }
    if d < 1 || d > days_in_month(y, mo as u32) {
        return Err("day out of range");
    }
    if h > 23 || mi > 59 {
        return Err("time out of range");
    }
    if sec > 59 {
        return Err("seconds out of range (leap seconds are not supported)");
    }
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return Err("empty fraction");
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let oh = two_digits(*h1, *h2).ok_or("bad offset")?;
            let om = two_digits(*m1, *m2).ok_or("bad offset")?;
            if oh > 23 || om > 59 {
                return Err("offset out of range");
            }
            let off = oh * 3600 + om * 60;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return Err("expected Z or a +HH:MM offset"),
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    Ok(days * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

fn two_digits(a: u8, b: u8) -> Option<i64> {
    (a.is_ascii_digit() && b.is_ascii_digit())
        .then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'))
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: u32) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// Parses exactly 40 hex digits (either case) into an infohash.
pub fn parse_infohash(s: &str) -> Result<[u8; 20], &'static str> {
    let b = s.as_bytes();
    if b.len() != 40 {
        return Err("infohash must be 40 hex digits");
    }
    let val = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err("infohash has a non-hex character"),
    };
    let mut out = [0u8; 20];
    for (i, o) in out.iter_mut().enumerate() {
        *o = val(b[2 * i])? << 4 | val(b[2 * i + 1])?;
    }
    Ok(out)
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
            (253_402_300_799, "9999-12-31T23:59:59Z"),
        ];
        for (secs, text) in cases {
            assert_eq!(format(secs), text, "format {secs}");
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

    #[test]
    fn hex_round_trip() {
        let ih: [u8; 20] = std::array::from_fn(|i| (i * 13) as u8 ^ 0xA5);
        let s = hex(&ih);
        assert_eq!(s.len(), 40);
        assert_eq!(s, s.to_lowercase());
        assert_eq!(parse_infohash(&s), Ok(ih));
        assert_eq!(parse_infohash(&s.to_uppercase()), Ok(ih));
        assert_eq!(hex(&[0x00, 0x0f, 0xf0, 0xff]), "000ff0ff");
        assert!(parse_infohash(&s[..38]).is_err());
        assert!(parse_infohash(&format!("{}zz", &s[..38])).is_err());
    }
}
