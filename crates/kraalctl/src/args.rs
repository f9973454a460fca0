//! Parsing of command-line values clap cannot parse by itself: annotation changes in
//! kubectl-annotate style (`KEY=VALUE` sets, `KEY-` removes) and durations (`5s`).

use std::collections::BTreeMap;
use std::time::Duration;

/// One annotation change from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `KEY=VALUE`: set the annotation (the value may be empty).
    Set(String, String),
    /// `KEY-`: remove the annotation.
    Remove(String),
}

/// Parses one `KEY=VALUE` or `KEY-` argument (clap's value parser for `pod update`).
pub fn parse_change(arg: &str) -> Result<Change, String> {
    if let Some((key, value)) = arg.split_once('=') {
        if key.is_empty() {
            return Err(format!(
                "{arg:?} has no key: expected KEY=VALUE to set or KEY- to remove"
            ));
        }
        return Ok(Change::Set(key.to_owned(), value.to_owned()));
    }
    match arg.strip_suffix('-') {
        Some(key) if !key.is_empty() => Ok(Change::Remove(key.to_owned())),
        Some(_) => Err(format!(
            "{arg:?} has no key: expected KEY=VALUE to set or KEY- to remove"
        )),
        None => Err(format!(
            "{arg:?} is neither KEY=VALUE (to set) nor KEY- (to remove), \
             e.g. kraal.dev/cpu-burst=500m or kraal.dev/cpu-burst-"
        )),
    }
}

/// The changes of one `pod update`, as the request carries them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub set: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

/// Folds the parsed changes into one request. A key set twice to different values, or both
/// set and removed, is a usage error; repeating the same change is harmless.
pub fn collect_changes(changes: &[Change]) -> Result<Changes, String> {
    let mut out = Changes::default();
    for change in changes {
        match change {
            Change::Set(key, value) => {
                if out.remove.contains(key) {
                    return Err(format!("{key} is both set and removed"));
                }
                if let Some(previous) = out.set.insert(key.clone(), value.clone())
                    && previous != *value
                {
                    return Err(format!(
                        "{key} is set twice, to {previous:?} and to {value:?}"
                    ));
                }
            }
            Change::Remove(key) => {
                if out.set.contains_key(key) {
                    return Err(format!("{key} is both set and removed"));
                }
                if !out.remove.contains(key) {
                    out.remove.push(key.clone());
                }
            }
        }
    }
    if out.set.is_empty() && out.remove.is_empty() {
        return Err("at least one change is required: KEY=VALUE or KEY-".to_owned());
    }
    Ok(out)
}

/// Parses a duration such as `5s`, `500ms`, `1m` or `1.5s` (clap's value parser for
/// `--timeout`).
pub fn parse_duration(arg: &str) -> Result<Duration, String> {
    let bad = || format!("{arg:?} is not a duration: expected e.g. 500ms, 5s or 1m");
    let arg = arg.trim();
    let split = arg
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (number, unit) = arg.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(number * scale).map_err(|_| bad())
}

/// Parses `--timeout` straight into the request's `timeout_ms` (clap's value parser).
pub fn parse_timeout_ms(arg: &str) -> Result<u32, String> {
    timeout_ms(parse_duration(arg)?)
}

/// A timeout as the request's `timeout_ms`, rounded up to whole milliseconds. Zero is
/// refused: on the wire it would mean kraald's default, which leaving `--timeout` out asks for.
pub fn timeout_ms(timeout: Duration) -> Result<u32, String> {
    if timeout.is_zero() {
        return Err("--timeout must be more than 0".to_owned());
    }
    let ms = timeout.as_micros().div_ceil(1000);
    u32::try_from(ms).map_err(|_| format!("timeout {timeout:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(k: &str, v: &str) -> Change {
        Change::Set(k.into(), v.into())
    }

    fn remove(k: &str) -> Change {
        Change::Remove(k.into())
    }

    #[test]
    fn parses_set_and_remove() {
        assert_eq!(
            parse_change("kraal.dev/cpu-burst=500m"),
            Ok(set("kraal.dev/cpu-burst", "500m"))
        );
        assert_eq!(
            parse_change("kraal.dev/cpu-burst-"),
            Ok(remove("kraal.dev/cpu-burst"))
        );
        // Only the first '=' splits: values may hold '=' (bandwidth specs do).
        assert_eq!(
            parse_change("kraal.dev/egress-bandwidth=min=50M,max=200M"),
            Ok(set("kraal.dev/egress-bandwidth", "min=50M,max=200M"))
        );
        // An empty value is a value, as in kubectl annotate.
        assert_eq!(parse_change("kraal.dev/x="), Ok(set("kraal.dev/x", "")));
        // A trailing '-' in a value is part of the value.
        assert_eq!(parse_change("a=b-"), Ok(set("a", "b-")));
        // The container-scoped form is just a longer key.
        assert_eq!(
            parse_change("kraal.dev/cpu-burst.web-"),
            Ok(remove("kraal.dev/cpu-burst.web"))
        );
    }

    #[test]
    fn rejects_bad_changes_naming_the_argument_and_the_form() {
        let err = parse_change("kraal.dev/cpu-burst").unwrap_err();
        assert!(err.contains("\"kraal.dev/cpu-burst\""), "{err}");
        assert!(err.contains("KEY=VALUE") && err.contains("KEY-"), "{err}");

        for bad in ["=500m", "-", "", "="] {
            let err = parse_change(bad).unwrap_err();
            assert!(err.contains("KEY=VALUE"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn collects_changes() {
        let changes =
            collect_changes(&[set("b", "2"), set("a", "1"), remove("c"), remove("c")]).unwrap();
        assert_eq!(
            changes.set.into_iter().collect::<Vec<_>>(),
            [("a".into(), "1".into()), ("b".into(), "2".into())]
        );
        assert_eq!(changes.remove, ["c"]);
        assert!(collect_changes(&[set("a", "1"), set("a", "1")]).is_ok());
    }

    #[test]
    fn rejects_conflicting_or_no_changes() {
        let err = collect_changes(&[set("a", "1"), remove("a")]).unwrap_err();
        assert!(err.contains("both set and removed"), "{err}");
        let err = collect_changes(&[remove("a"), set("a", "1")]).unwrap_err();
        assert!(err.contains("both set and removed"), "{err}");
        let err = collect_changes(&[set("a", "1"), set("a", "2")]).unwrap_err();
        assert!(err.contains("set twice"), "{err}");
        let err = collect_changes(&[]).unwrap_err();
        assert!(err.contains("at least one change"), "{err}");
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["5", "s", "5h", "-1s", "", "1..5s", "5 s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn timeout_in_ms() {
        assert_eq!(timeout_ms(Duration::from_secs(5)), Ok(5000));
        assert_eq!(timeout_ms(Duration::from_micros(10)), Ok(1));
        assert_eq!(timeout_ms(Duration::from_micros(1500)), Ok(2));
        assert!(timeout_ms(Duration::ZERO).is_err());
        assert!(timeout_ms(Duration::from_secs(u64::from(u32::MAX))).is_err());
        assert_eq!(parse_timeout_ms("2s"), Ok(2000));
        assert!(parse_timeout_ms("0s").is_err());
    }
}
