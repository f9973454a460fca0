//! Port lists (`20000-20999,8080`) and port specs (a list, or `auto:<count>` for a block that
//! kraal allocates from the node's pool later).

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

use crate::error::excerpt;

/// Most separate ranges one list may have once adjacent ones are merged: the kernel programs
/// that enforce lists walk them in a loop of fixed length (kraal-ebpf's span table).
pub const MAX_PORT_RANGES: usize = 16;

/// Why a string is not a port list or port spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortListError {
    /// Nothing at all, or only blanks.
    #[error("the list is empty")]
    Empty,
    /// `8080,,9090` or a trailing comma.
    #[error("entry {position} is empty (a stray comma?)")]
    EmptyEntry {
        /// 1-based position of the entry in the list.
        position: usize,
    },
    /// An entry that is neither `<port>` nor `<lo>-<hi>`.
    #[error("entry {0:?} is not a port or a port range <lo>-<hi>")]
    InvalidEntry(String),
    /// A number outside 1..=65535 (port 0 means "any port" to the kernel, never a real port).
    #[error("port {0} is outside 1..=65535")]
    OutOfRange(String),
    /// `30-20`.
    #[error("range start {start} is above its end {end}")]
    Reversed {
        /// The range's first port as written.
        start: u16,
        /// The range's last port as written.
        end: u16,
    },
    /// Two entries of one list share a port.
    #[error("{first} overlaps {second}")]
    Overlap {
        /// The entry that starts first.
        first: PortRange,
        /// The entry that starts inside `first`.
        second: PortRange,
    },
    /// More separate ranges than the kernel side can hold.
    #[error("{count} separate ranges; at most {MAX_PORT_RANGES} (adjacent ranges count as one)")]
    TooManyRanges {
        /// Separate ranges after merging adjacent ones.
        count: usize,
    },
    /// `auto:0`, `auto:x`, `auto:70000`.
    #[error("auto:{0} is not a block size; the size must be a whole number in 1..=65535")]
    AutoCount(String),
}

/// An inclusive range of ports, `start..=end`, with `1 <= start <= end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    start: u16,
    end: u16,
}

impl PortRange {
    /// A range `start..=end`; port 0 and reversed ranges are refused.
    pub fn new(start: u16, end: u16) -> Result<Self, PortListError> {
        if start == 0 {
            return Err(PortListError::OutOfRange(start.to_string()));
        }
        if start > end {
            return Err(PortListError::Reversed { start, end });
        }
        Ok(Self { start, end })
    }

    /// The range holding just `port`.
    pub fn single(port: u16) -> Result<Self, PortListError> {
        Self::new(port, port)
    }

    /// First port of the range.
    pub fn start(&self) -> u16 {
        self.start
    }

    /// Last port of the range (inclusive).
    pub fn end(&self) -> u16 {
        self.end
    }

    /// Number of ports in the range (at least 1).
    pub fn len(&self) -> usize {
        usize::from(self.end.saturating_sub(self.start)).saturating_add(1)
    }

    /// Always false: a range holds at least one port. Present because `len` is.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// True if `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }

    /// True if the two ranges share at least one port.
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// A non-empty set of ports, kept as sorted, disjoint ranges.
///
/// Touching ranges are merged (`8080,8081` becomes `8080-8081`), so two lists holding the same
/// ports are equal and display the same way.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortList {
    ranges: Vec<PortRange>,
}

impl PortList {
    /// Builds a list from ranges in any order; refuses an empty list and ranges that overlap.
    pub fn new(ranges: impl IntoIterator<Item = PortRange>) -> Result<Self, PortListError> {
        let mut ranges: Vec<PortRange> = ranges.into_iter().collect();
        if ranges.is_empty() {
            return Err(PortListError::Empty);
        }
        ranges.sort_unstable();
        let mut merged: Vec<PortRange> = Vec::with_capacity(ranges.len());
        for range in ranges {
            match merged.last_mut() {
                Some(last) if last.overlaps(&range) => {
                    return Err(PortListError::Overlap {
                        first: *last,
                        second: range,
                    });
                }
                // `last.end < range.start <= 65535`, so `last.end + 1` cannot overflow.
                Some(last) if last.end.checked_add(1) == Some(range.start) => {
                    last.end = range.end;
                }
                _ => merged.push(range),
            }
        }
        if merged.len() > MAX_PORT_RANGES {
            return Err(PortListError::TooManyRanges {
                count: merged.len(),
            });
        }
        Ok(Self { ranges: merged })
    }

    /// Parses `20000-20999,8080` (blanks around entries are allowed).
    pub fn parse(text: &str) -> Result<Self, PortListError> {
        if text.trim().is_empty() {
            return Err(PortListError::Empty);
        }
        let mut ranges = Vec::new();
        for (index, entry) in text.split(',').enumerate() {
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(PortListError::EmptyEntry {
                    position: index.saturating_add(1),
                });
            }
            ranges.push(parse_entry(entry)?);
        }
        Self::new(ranges)
    }

    /// True if `port` is in the list.
    pub fn contains(&self, port: u16) -> bool {
        // Ranges are sorted and disjoint: the only candidate is the last one starting <= port.
        let after = self.ranges.partition_point(|r| r.start <= port);
        after
            .checked_sub(1)
            .and_then(|index| self.ranges.get(index))
            .is_some_and(|range| range.contains(port))
    }

    /// Number of ports in the list (at least 1).
    pub fn len(&self) -> usize {
        self.ranges
            .iter()
            .fold(0usize, |total, range| total.saturating_add(range.len()))
    }

    /// Always false: a list holds at least one port. Present because `len` is.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The ranges, sorted and disjoint.
    pub fn ranges(&self) -> &[PortRange] {
        &self.ranges
    }

    /// Every port of the list, in ascending order.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ranges.iter().flat_map(|range| range.start..=range.end)
    }

    /// True if no port is in both lists.
    pub fn is_disjoint(&self, other: &PortList) -> bool {
        !self
            .ranges
            .iter()
            .any(|mine| other.ranges.iter().any(|theirs| mine.overlaps(theirs)))
    }
}

impl FromStr for PortList {
    type Err = PortListError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for PortList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, range) in self.ranges.iter().enumerate() {
            if index > 0 {
                f.write_str(",")?;
            }
            write!(f, "{range}")?;
        }
        Ok(())
    }
}

/// Shown as the annotation form (`"20000-20999,8080"`), which is what a reader expects.
impl Serialize for PortList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What a pod asked for in `kraal.dev/bind-ports` or `kraal.dev/connect-ports`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortSpec {
    /// Exactly these ports.
    List(PortList),
    /// A block of `count` ports that kraal allocates from the node's pool.
    Auto {
        /// Size of the block, 1..=65535.
        count: u16,
    },
}

impl PortSpec {
    /// Parses a port list or `auto:<count>`.
    pub fn parse(text: &str) -> Result<Self, PortListError> {
        match text.trim().strip_prefix("auto:") {
            Some(count) => parse_auto_count(count.trim()).map(|count| Self::Auto { count }),
            None => PortList::parse(text).map(Self::List),
        }
    }

    /// Number of ports the pod gets.
    pub fn len(&self) -> usize {
        match self {
            Self::List(list) => list.len(),
            Self::Auto { count } => usize::from(*count),
        }
    }

    /// Always false: a spec holds at least one port. Present because `len` is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl FromStr for PortSpec {
    type Err = PortListError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::List(list) => write!(f, "{list}"),
            Self::Auto { count } => write!(f, "auto:{count}"),
        }
    }
}

/// Shown as the annotation form (`"auto:1000"`, `"8080"`).
impl Serialize for PortSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

fn parse_entry(entry: &str) -> Result<PortRange, PortListError> {
    let invalid = || PortListError::InvalidEntry(excerpt(entry));
    match entry.split_once('-') {
        Some((start, end)) => {
            let start = parse_port(start.trim()).ok_or_else(invalid)??;
            let end = parse_port(end.trim()).ok_or_else(invalid)??;
            PortRange::new(start, end)
        }
        None => PortRange::single(parse_port(entry).ok_or_else(invalid)??),
    }
}

/// `None` if `text` is not a decimal number at all; `Some(Err)` if it is one outside 1..=65535.
fn parse_port(text: &str) -> Option<Result<u16, PortListError>> {
    let number = parse_decimal(text)?;
    Some(
        number
            .and_then(|n| u16::try_from(n).ok())
            .filter(|port| *port != 0)
            .ok_or_else(|| PortListError::OutOfRange(excerpt(text))),
    )
}

fn parse_auto_count(text: &str) -> Result<u16, PortListError> {
    parse_decimal(text)
        .flatten()
        .and_then(|n| u16::try_from(n).ok())
        .filter(|count| *count != 0)
        .ok_or_else(|| PortListError::AutoCount(excerpt(text)))
}

/// Plain ASCII digits only (no sign, no blanks, which `u32::from_str` would partly accept).
/// `None` if not digits; `Some(None)` if digits whose value does not fit in a `u32`.
pub(crate) fn parse_decimal(text: &str) -> Option<Option<u32>> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.bytes().try_fold(0u32, |value, byte| {
        value
            .checked_mul(10)?
            .checked_add(u32::from(byte.wrapping_sub(b'0')))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: u16, end: u16) -> PortRange {
        PortRange::new(start, end).unwrap()
    }

    #[test]
    fn parses_lists() {
        let list = PortList::parse("20000-20999,8080").unwrap();
        assert_eq!(list.ranges(), &[range(8080, 8080), range(20000, 20999)]);
        assert_eq!(list.len(), 1001);
        assert!(!list.is_empty());
        assert!(list.contains(8080));
        assert!(list.contains(20000));
        assert!(list.contains(20999));
        assert!(!list.contains(21000));
        assert!(!list.contains(8081));
        assert!(!list.contains(0));
        assert_eq!(list.to_string(), "8080,20000-20999");
        assert_eq!(
            list.ports().take(3).collect::<Vec<_>>(),
            [8080, 20000, 20001]
        );
    }

    #[test]
    fn accepts_blanks_extremes_and_merges_touching_ranges() {
        let list = PortList::parse(" 1 , 2-3,65535 ").unwrap();
        assert_eq!(list.ranges(), &[range(1, 3), range(65535, 65535)]);
        assert_eq!(list.to_string(), "1-3,65535");
        let sixteen: Vec<String> = (0..16).map(|i| (1 + 2 * i).to_string()).collect();
        assert_eq!(
            PortList::parse(&sixteen.join(",")).unwrap().ranges().len(),
            16
        );
        let touching: Vec<String> = (1..=40).map(|i| i.to_string()).collect();
        assert_eq!(
            PortList::parse(&touching.join(",")).unwrap().to_string(),
            "1-40"
        );
        assert_eq!(PortList::parse("1-65535").unwrap().len(), 65535);
        assert_eq!(PortList::parse("080").unwrap().to_string(), "80");
    }

    #[test]
    fn rejects_bad_lists() {
        let table: &[(&str, PortListError)] = &[
            ("", PortListError::Empty),
            ("  ", PortListError::Empty),
            ("70000", PortListError::OutOfRange("70000".into())),
            ("0", PortListError::OutOfRange("0".into())),
            ("0-10", PortListError::OutOfRange("0".into())),
            (
                "99999999999999",
                PortListError::OutOfRange("99999999999999".into()),
            ),
            ("30-20", PortListError::Reversed { start: 30, end: 20 }),
            (
                "8000-8100,8080",
                PortListError::Overlap {
                    first: range(8000, 8100),
                    second: range(8080, 8080),
                },
            ),
            (
                "80,80",
                PortListError::Overlap {
                    first: range(80, 80),
                    second: range(80, 80),
                },
            ),
            ("80,", PortListError::EmptyEntry { position: 2 }),
            (",80", PortListError::EmptyEntry { position: 1 }),
            ("http", PortListError::InvalidEntry("http".into())),
            ("-5", PortListError::InvalidEntry("-5".into())),
            ("5-", PortListError::InvalidEntry("5-".into())),
            ("1-2-3", PortListError::InvalidEntry("1-2-3".into())),
            ("+80", PortListError::InvalidEntry("+80".into())),
            ("80 81", PortListError::InvalidEntry("80 81".into())),
            (
                "1,3,5,7,9,11,13,15,17,19,21,23,25,27,29,31,33",
                PortListError::TooManyRanges { count: 17 },
            ),
        ];
        for (text, want) in table {
            assert_eq!(&PortList::parse(text).unwrap_err(), want, "{text:?}");
        }
    }

    #[test]
    fn parses_specs() {
        assert_eq!(
            PortSpec::parse("auto:1000").unwrap(),
            PortSpec::Auto { count: 1000 }
        );
        assert_eq!(PortSpec::parse("auto:65535").unwrap().len(), 65535);
        assert_eq!(PortSpec::parse("auto:1").unwrap().to_string(), "auto:1");
        assert_eq!(PortSpec::parse("9000-9009").unwrap().len(), 10);
        for bad in ["auto:0", "auto:x", "auto:", "auto:70000", "auto:-1"] {
            assert!(
                matches!(PortSpec::parse(bad), Err(PortListError::AutoCount(_))),
                "{bad}"
            );
        }
        assert!(PortSpec::parse("auto").is_err());
    }

    #[test]
    fn disjointness() {
        let a = PortList::parse("1000-1999").unwrap();
        let b = PortList::parse("2000-2999,500").unwrap();
        let c = PortList::parse("1999").unwrap();
        assert!(a.is_disjoint(&b));
        assert!(b.is_disjoint(&a));
        assert!(!a.is_disjoint(&c));
        assert!(!c.is_disjoint(&a));
    }

    #[test]
    fn serializes_as_annotation_text() {
        let spec = PortSpec::parse("8080,20000-20999").unwrap();
        assert_eq!(
            serde_json::to_string(&spec).unwrap(),
            "\"8080,20000-20999\""
        );
        let auto = PortSpec::parse("auto:7").unwrap();
        assert_eq!(serde_json::to_string(&auto).unwrap(), "\"auto:7\"");
    }
}
