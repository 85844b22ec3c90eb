//! Scalar value syntaxes of the YAML file (durations, percentages, sizes) and
//! an order-keeping map, parsed while deserializing so a bad value is reported
//! with its line and column.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

const DURATION_HINT: &str = "expected a duration like 250ms or 10s";
const PERCENT_HINT: &str = "expected a percentage like 50, 50.5 or \"50%\"";
const SIZE_HINT: &str = "expected a size in bytes like 65536 or 64KiB";

/// A duration written `250ms`, `10s`, `1.5s`, `1m`, `1h` or `1m30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

/// A percentage written `50`, `50.5` or `"50%"`. The range is checked by
/// `validate`, which can name the key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percent(pub f64);

/// A size in bytes written `65536`, `64KiB` or `1MiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

/// A YAML mapping that keeps the file's order and refuses duplicate keys.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderedMap<V>(pub Vec<(String, V)>);

impl<V> Default for OrderedMap<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

/// Parses `250ms`, `1.5s`, `1m30s`, … (units ns, us, ms, s, m, h).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || format!("{DURATION_HINT}, got {text:?}");
    if text.is_empty() {
        return Err(bad());
    }
    let mut rest = text;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!("{DURATION_HINT}, got {text:?} (add a unit)"));
        }
        let unit_nanos = unit_nanos(unit).ok_or_else(bad)?;
        let nanos = scaled(number, unit_nanos).ok_or_else(bad)?;
        total = total.checked_add(nanos).ok_or_else(bad)?;
        rest = next;
    }
    // Longer durations would overflow clock arithmetic on the request path;
    // nothing a proxy waits for needs more than a year.
    const MAX_NANOS: u128 = 366 * 24 * 3_600_000_000_000;
    if total > MAX_NANOS {
        return Err(format!("durations are limited to 366 days, got {text:?}"));
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| bad())?;
    // The remainder of a division by 10^9 always fits in u32.
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// `number` (digits, at most one `.`) times `unit` nanoseconds, exactly.
fn scaled(number: &str, unit: u128) -> Option<u128> {
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && frac.is_empty()) || frac.contains('.') || frac.len() > 9 {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut nanos = whole.checked_mul(unit)?;
    if !frac.is_empty() {
        let digits: u128 = frac.parse().ok()?;
        let scale = 10u128.pow(frac.len() as u32);
        nanos = nanos.checked_add(digits.checked_mul(unit)? / scale)?;
    }
    Some(nanos)
}

/// Renders a duration in the largest unit that represents it exactly.
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    for (unit, size) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if nanos % size == 0 {
            return format!("{}{unit}", nanos / size);
        }
    }
    format!("{nanos}ns")
}

/// Parses `50`, `50.5`, `50%` into a (possibly out-of-range) percentage.
pub fn parse_percent(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let number = trimmed.strip_suffix('%').unwrap_or(trimmed).trim_end();
    match number.parse::<f64>() {
        Ok(p) if p.is_finite() => Ok(p),
        _ => Err(format!("{PERCENT_HINT}, got {text:?}")),
    }
}

/// Parses `65536`, `65536B`, `64KiB`, `1MiB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let multiplier = match unit.trim_start() {
        "" | "B" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        _ => return Err(format!("{SIZE_HINT}, got {text:?}")),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("{SIZE_HINT}, got {text:?}"))
}

/// Deserializes any scalar as its text and parses it with `parse`.
struct ScalarVisitor<T> {
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
}

impl<T> Visitor<'_> for ScalarVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(ScalarVisitor {
            expecting: "a duration like 250ms or 10s",
            parse: |s| parse_duration(s).map(Dur),
        })
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(ScalarVisitor {
            expecting: "a percentage like 50 or \"50%\"",
            parse: |s| parse_percent(s).map(Percent),
        })
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(ScalarVisitor {
            expecting: "a size in bytes like 65536 or 64KiB",
            parse: |s| parse_size(s).map(ByteSize),
        })
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = OrderedMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of names to values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries: Vec<(String, V)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if entries.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format!("duplicate key `{key}`")));
                    }
                    let value = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(OrderedMap(entries))
            }
        }

        d.deserialize_map(MapVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn durations_accept_the_documented_units_and_fractions() {
        assert_eq!(parse_duration("250ms"), Ok(ms(250)));
        assert_eq!(parse_duration("10s"), Ok(ms(10_000)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse_duration("1m"), Ok(ms(60_000)));
        assert_eq!(parse_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(".5s"), Ok(ms(500)));
    }

    #[test]
    fn durations_without_a_unit_or_with_garbage_are_refused() {
        for bad in ["10", "", "s", "-1s", "1.2.3s", "10 s", "1d", "1s1"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(
                err.contains("expected a duration like 250ms or 10s"),
                "{err}"
            );
        }
    }

    #[test]
    fn durations_beyond_a_year_are_refused() {
        assert!(parse_duration("366d").is_err(), "no day unit");
        assert!(parse_duration("8784h").is_ok());
        let e = parse_duration("99999999999999999999h").expect_err("too long");
        assert!(e.contains("366 days"), "{e}");
    }

    #[test]
    fn durations_render_in_the_largest_exact_unit() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(ms(1_500)), "1500ms");
        assert_eq!(format_duration(ms(2_000)), "2s");
        assert_eq!(format_duration(ms(120_000)), "2m");
        assert_eq!(format_duration(ms(7_200_000)), "2h");
        assert_eq!(format_duration(Duration::from_nanos(1_500)), "1500ns");
    }

    #[test]
    fn percents_accept_numbers_and_a_percent_sign() {
        assert_eq!(parse_percent("50"), Ok(50.0));
        assert_eq!(parse_percent("50.5"), Ok(50.5));
        assert_eq!(parse_percent("1%"), Ok(1.0));
        assert!(parse_percent("half").is_err());
        assert!(parse_percent("NaN").is_err());
    }

    #[test]
    fn sizes_accept_bytes_and_binary_units() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert!(parse_size("64KB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999MiB").is_err());
    }
}
