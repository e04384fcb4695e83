//! When a certificate expires, read from its DER encoding.
//!
//! Only the path to `validity.notAfter` is walked: an expiry gauge needs no full X.509 parser,
//! and none is in the tree. Every read is bounds-checked and every failure an `Err`, because
//! this runs on files an operator may have replaced by hand while the node runs.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// `[0] EXPLICIT Version` of tbsCertificate: constructed, context-specific, tag 0.
const VERSION: u8 = 0xA0;

/// The certificate's notAfter, in seconds since the Unix epoch.
pub fn not_after_unix(der: &[u8]) -> Result<i64, String> {
    let mut outer = Reader(der);
    let certificate = outer.expect(SEQUENCE, "Certificate")?;
    if !outer.0.is_empty() {
        return Err(format!("{} bytes after the Certificate", outer.0.len()));
    }
    let tbs = Reader(certificate).expect(SEQUENCE, "tbsCertificate")?;
    let mut tbs = Reader(tbs);
    if tbs.0.first() == Some(&VERSION) {
        tbs.next("version")?;
    }
    tbs.expect(INTEGER, "serialNumber")?;
    tbs.expect(SEQUENCE, "signature")?;
    tbs.expect(SEQUENCE, "issuer")?;
    let mut validity = Reader(tbs.expect(SEQUENCE, "validity")?);
    validity.next("notBefore")?;
    let (tag, value) = validity.next("notAfter")?;
    parse_time(tag, value).map_err(|e| format!("notAfter: {e}"))
}

/// The notAfter of the first certificate in a PEM file, in seconds since the Unix epoch.
pub fn not_after_pem_file(path: &Path) -> Result<i64, String> {
    let der = CertificateDer::from_pem_file(path).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => format!("{}: no CERTIFICATE in the file", path.display()),
        e => format!("{}: {e}", path.display()),
    })?;
    not_after_unix(&der).map_err(|e| format!("{}: {e}", path.display()))
}

/// The unread rest of one DER constructed value's contents.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// The next TLV's tag and contents. `what` names the field, so an error says where the
    /// encoding went wrong rather than only that it did.
    fn next(&mut self, what: &str) -> Result<(u8, &'a [u8]), String> {
        let (&tag, rest) = self.0.split_first().ok_or_else(|| format!("{what}: missing"))?;
        // Certificates use no tag numbers above 30; the multi-byte form would only mean a
        // corrupt or foreign encoding here.
        if tag & 0x1F == 0x1F {
            return Err(format!("{what}: unsupported multi-byte tag"));
        }
        let (&first, mut rest) = rest.split_first().ok_or_else(|| format!("{what}: truncated length"))?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7F);
            // 0x80 is BER's indefinite length, which DER forbids; more than 4 length bytes
            // would describe a value larger than any certificate.
            if count == 0 || count > 4 {
                return Err(format!("{what}: unsupported length encoding 0x{first:02x}"));
            }
            let bytes = rest.get(..count).ok_or_else(|| format!("{what}: truncated length"))?;
            rest = &rest[count..];
            bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b))
        };
        let value =
            rest.get(..len).ok_or_else(|| format!("{what}: {len} bytes of content, but only {} left", rest.len()))?;
        self.0 = &rest[len..];
        Ok((tag, value))
    }

    fn expect(&mut self, tag: u8, what: &str) -> Result<&'a [u8], String> {
        match self.next(what)? {
            (t, value) if t == tag => Ok(value),
            (t, _) => Err(format!("{what}: tag 0x{t:02x}, expected 0x{tag:02x}")),
        }
    }
}

/// A UTCTime or GeneralizedTime in the only forms RFC 5280 allows in certificates: UTC
/// ("Z"), with seconds, without fractions.
fn parse_time(tag: u8, value: &[u8]) -> Result<i64, String> {
    let (form, year_len) = match tag {
        UTC_TIME => ("YYMMDDHHMMSSZ", 2),
        GENERALIZED_TIME => ("YYYYMMDDHHMMSSZ", 4),
        t => return Err(format!("tag 0x{t:02x} is neither UTCTime nor GeneralizedTime")),
    };
    let shown = String::from_utf8_lossy(value);
    // Checked as bytes, all digits, before any slicing: slicing a `str` could split a
    // multi-byte character and panic, and `str::parse` would accept a sign.
    let digits = match value.split_last() {
        Some((b'Z', digits)) if digits.len() == form.len() - 1 && digits.iter().all(u8::is_ascii_digit) => digits,
        _ => return Err(format!("{shown:?} is not in the form {form}")),
    };
    let number = |d: &[u8]| d.iter().fold(0i64, |n, &b| n * 10 + i64::from(b - b'0'));
    let (year, rest) = digits.split_at(year_len);
    let year = match (tag, number(year)) {
        // RFC 5280 4.1.2.5.1: two-digit years 50-99 are 19xx, 00-49 are 20xx.
        (UTC_TIME, yy) if yy >= 50 => 1900 + yy,
        (UTC_TIME, yy) => 2000 + yy,
        (_, yyyy) => yyyy,
    };
    let field = |i: usize| number(&rest[i..i + 2]);
    let (month, day, hour, minute, second) = (field(0), field(2), field(4), field(6), field(8));
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(format!("no such date: {shown:?}"));
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(format!("no such time of day: {shown:?}"));
    }
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil):
/// counting from March makes the leap day the last of its "year", so each 400-year era has
/// a fixed layout and no table is needed.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;
    use rcgen::{date_time_ymd, CertificateParams, KeyPair};
    use std::time::Duration;

    /// A self-signed certificate expiring `after_midnight` into the given day, in DER and PEM.
    fn certificate(year: i32, month: u8, day: u8, after_midnight: Duration) -> (Vec<u8>, String) {
        let mut params = CertificateParams::new(vec!["node-1".to_string()]).unwrap();
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(year, month, day) + after_midnight;
        let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
        (cert.der().to_vec(), cert.pem())
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    // Expected values from `date -u -d 2030-01-02T00:00:00Z +%s` and so on.

    #[test]
    fn reads_a_utc_time_not_after() {
        let (der, _) = certificate(2030, 1, 2, Duration::ZERO);
        assert!(contains(&der, b"300102000000Z"), "rcgen writes 2030 as UTCTime");
        assert_eq!(not_after_unix(&der), Ok(1_893_542_400));
    }

    #[test]
    fn reads_a_generalized_time_not_after() {
        let (der, _) = certificate(2051, 6, 15, Duration::ZERO);
        assert!(contains(&der, b"20510615000000Z"), "rcgen writes 2051 as GeneralizedTime");
        assert_eq!(not_after_unix(&der), Ok(2_570_400_000));
    }

    #[test]
    fn two_digit_years_from_50_are_in_the_1900s() {
        let (der, _) = certificate(1960, 3, 1, Duration::ZERO);
        assert!(contains(&der, b"600301000000Z"));
        assert_eq!(not_after_unix(&der), Ok(-310_435_200));
        let (der, _) = certificate(2049, 12, 31, Duration::from_secs(86_399));
        assert!(contains(&der, b"491231235959Z"));
        assert_eq!(not_after_unix(&der), Ok(2_524_607_999));
    }

    #[test]
    fn parses_both_time_forms_and_refuses_malformed_ones() {
        assert_eq!(parse_time(UTC_TIME, b"000229123456Z"), Ok(951_827_696));
        assert_eq!(parse_time(GENERALIZED_TIME, b"20000229123456Z"), Ok(951_827_696));
        assert_eq!(parse_time(GENERALIZED_TIME, b"19700101000000Z"), Ok(0));
        for (tag, bad) in [
            (UTC_TIME, &b"0002291234Z"[..]),          // no seconds
            (UTC_TIME, b"000229123456"),              // no zone
            (UTC_TIME, b"000229123456+0100"),         // offset, not UTC
            (UTC_TIME, b"20000229123456Z"),           // a GeneralizedTime under the UTCTime tag
            (GENERALIZED_TIME, b"20000229123456.5Z"), // fraction
            (GENERALIZED_TIME, b"21000229000000Z"),   // 2100 is no leap year
            (GENERALIZED_TIME, b"20001301000000Z"),
            (GENERALIZED_TIME, b"20000100000000Z"),
            (GENERALIZED_TIME, b"20000101240000Z"),
            (GENERALIZED_TIME, b"20000101006000Z"),
            (GENERALIZED_TIME, b"2000010100+000Z"),
            (GENERALIZED_TIME, b"\xff0000101000000Z"),
            (UTC_TIME, "0001011200\u{e9}Z".as_bytes()), // right length in bytes; slicing it as text would panic
            (INTEGER, b"20000101000000Z"),
        ] {
            assert!(parse_time(tag, bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn days_from_civil_counts_every_day_once() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        let mut expected = days_from_civil(1899, 12, 31);
        for year in 1900..=2100 {
            for month in 1..=12 {
                for day in 1..=days_in_month(year, month) {
                    expected += 1;
                    assert_eq!(days_from_civil(year, month, day), expected, "{year}-{month}-{day}");
                }
            }
        }
    }

    #[test]
    fn every_truncation_and_trailing_garbage_is_an_error() {
        let (der, _) = certificate(2030, 1, 2, Duration::ZERO);
        for len in 0..der.len() {
            assert!(not_after_unix(&der[..len]).is_err(), "prefix of {len} bytes");
        }
        let mut longer = der.clone();
        longer.push(0);
        assert!(not_after_unix(&longer).is_err());
    }

    #[test]
    fn random_and_mutated_input_never_panics() {
        let mut rng = SplitMix64::new(0x5eed);
        for _ in 0..2_000 {
            let len = rng.below(200) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            // Start most of them as a SEQUENCE so they get past the first check.
            if len > 0 && rng.below(4) > 0 {
                bytes[0] = SEQUENCE;
            }
            let _ = not_after_unix(&bytes);
        }
        let (der, _) = certificate(2030, 1, 2, Duration::ZERO);
        for _ in 0..2_000 {
            let mut bytes = der.clone();
            for _ in 0..=rng.below(3) {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] = rng.next_u64() as u8;
            }
            let _ = not_after_unix(&bytes);
        }
    }

    #[test]
    fn reads_the_first_certificate_of_a_pem_file_and_names_the_file_on_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.pem");
        let (_, first) = certificate(2051, 6, 15, Duration::ZERO);
        let (_, second) = certificate(2030, 1, 2, Duration::ZERO);
        std::fs::write(&path, format!("{first}{second}")).unwrap();
        assert_eq!(not_after_pem_file(&path), Ok(2_570_400_000));

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let missing = dir.path().join("missing.pem");
        for path in [empty, missing] {
            let err = not_after_pem_file(&path).unwrap_err();
            assert!(err.contains(&path.display().to_string()), "{err}");
        }
    }
}
