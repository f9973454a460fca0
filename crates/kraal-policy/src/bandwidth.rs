//! Bandwidth: the plain cap of `kubernetes.io/<dir>-bandwidth` (`100M`, bits/s) and kraal's
//! `min=50M,max=200M[,burst=64Ki]` (soft guarantee, hard ceiling, burst in bytes).

use std::fmt;

use serde::Serialize;

use crate::error::excerpt;
use crate::quantity::{Quantity, QuantityError};

/// Why a bandwidth value is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BandwidthError {
    /// The value (or one field's value) is not a usable quantity.
    #[error("{}{source}", field_prefix(*.field))]
    Quantity {
        /// `min`, `max` or `burst`; `None` for the plain cap.
        field: Option<&'static str>,
        /// What is wrong with the quantity.
        source: QuantityError,
    },
    /// A rate or burst of zero (a zero cap would silence the pod; leave the key out instead).
    #[error("{} must be greater than 0", field_name(*.field))]
    Zero {
        /// `max` or `burst`; `None` for the plain cap.
        field: Option<&'static str>,
    },
    /// The value is empty.
    #[error("the value is empty")]
    Empty,
    /// `min=1M,,max=2M`.
    #[error("entry {position} is empty (a stray comma?)")]
    EmptyEntry {
        /// 1-based position of the entry.
        position: usize,
    },
    /// An entry without `=`.
    #[error("entry {0:?} is not <name>=<quantity>")]
    NotAssignment(String),
    /// A name other than min, max, burst.
    #[error("unknown field {0:?} (known: min, max, burst)")]
    UnknownField(String),
    /// The same field twice.
    #[error("{0} is given more than once")]
    Duplicate(&'static str),
    /// No `max=`: kraal needs a ceiling to enforce.
    #[error("max is missing")]
    MissingMax,
    /// The guarantee exceeds the ceiling.
    #[error("min {min} bit/s is above max {max} bit/s")]
    MinAboveMax {
        /// The guarantee, bits/s.
        min: u64,
        /// The ceiling, bits/s.
        max: u64,
    },
}

fn field_prefix(field: Option<&'static str>) -> String {
    field.map(|name| format!("{name}: ")).unwrap_or_default()
}

fn field_name(field: Option<&'static str>) -> &'static str {
    field.unwrap_or("the rate")
}

/// Rates for one direction of a pod's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Rates {
    /// Guaranteed rate in bits/s (0: no guarantee). Never above `max_bps`.
    pub min_bps: u64,
    /// Ceiling in bits/s, greater than 0.
    pub max_bps: u64,
    /// Bytes that may pass above the ceiling in one go; `None`: kraal's default.
    pub burst_bytes: Option<u64>,
}

impl Rates {
    /// Checked constructor: `0 < max`, `min <= max`, `burst > 0` when given.
    pub fn new(
        min_bps: u64,
        max_bps: u64,
        burst_bytes: Option<u64>,
    ) -> Result<Self, BandwidthError> {
        if max_bps == 0 {
            return Err(BandwidthError::Zero { field: Some("max") });
        }
        if burst_bytes == Some(0) {
            return Err(BandwidthError::Zero {
                field: Some("burst"),
            });
        }
        if min_bps > max_bps {
            return Err(BandwidthError::MinAboveMax {
                min: min_bps,
                max: max_bps,
            });
        }
        Ok(Self {
            min_bps,
            max_bps,
            burst_bytes,
        })
    }

    /// Parses `kubernetes.io/<dir>-bandwidth`: a bit rate above 0, used as a hard cap with no
    /// guarantee, as the CNI bandwidth plugin reads it.
    pub fn parse_cap(text: &str) -> Result<Self, BandwidthError> {
        let max_bps = quantity_value(text, None)?;
        if max_bps == 0 {
            return Err(BandwidthError::Zero { field: None });
        }
        Ok(Self {
            min_bps: 0,
            max_bps,
            burst_bytes: None,
        })
    }

    /// Parses `min=<bits/s>,max=<bits/s>[,burst=<bytes>]`: fields in any order, each at most
    /// once, `max` required, blanks around entries allowed.
    pub fn parse(text: &str) -> Result<Self, BandwidthError> {
        if text.trim().is_empty() {
            return Err(BandwidthError::Empty);
        }
        let mut min = None;
        let mut max = None;
        let mut burst = None;
        for (index, entry) in text.split(',').enumerate() {
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(BandwidthError::EmptyEntry {
                    position: index.saturating_add(1),
                });
            }
            let (name, value) = entry
                .split_once('=')
                .ok_or_else(|| BandwidthError::NotAssignment(excerpt(entry)))?;
            let (field, slot) = match name.trim() {
                "min" => ("min", &mut min),
                "max" => ("max", &mut max),
                "burst" => ("burst", &mut burst),
                other => return Err(BandwidthError::UnknownField(excerpt(other))),
            };
            if slot.is_some() {
                return Err(BandwidthError::Duplicate(field));
            }
            *slot = Some(quantity_value(value.trim(), Some(field))?);
        }
        let max = max.ok_or(BandwidthError::MissingMax)?;
        Self::new(min.unwrap_or(0), max, burst)
    }

    /// True if the pod is promised bandwidth (`min > 0`).
    pub fn has_guarantee(&self) -> bool {
        self.min_bps > 0
    }
}

/// The kraal annotation form, with exact integers (`min=50000000,max=200000000,burst=65536`).
impl fmt::Display for Rates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "min={},max={}", self.min_bps, self.max_bps)?;
        if let Some(burst) = self.burst_bytes {
            write!(f, ",burst={burst}")?;
        }
        Ok(())
    }
}

/// A pod's bandwidth limits; `None` for a direction the pod did not limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct BandwidthPolicy {
    /// Traffic the pod sends.
    pub egress: Option<Rates>,
    /// Traffic the pod receives.
    pub ingress: Option<Rates>,
}

fn quantity_value(text: &str, field: Option<&'static str>) -> Result<u64, BandwidthError> {
    Quantity::parse(text)
        .and_then(|quantity| quantity.value())
        .map_err(|source| BandwidthError::Quantity { field, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(min: u64, max: u64, burst: Option<u64>) -> Rates {
        Rates::new(min, max, burst).unwrap()
    }

    #[test]
    fn parses_caps() {
        assert_eq!(Rates::parse_cap("100M"), Ok(rates(0, 100_000_000, None)));
        assert_eq!(Rates::parse_cap("1G"), Ok(rates(0, 1_000_000_000, None)));
        assert_eq!(Rates::parse_cap("500k"), Ok(rates(0, 500_000, None)));
        assert_eq!(
            Rates::parse_cap("0"),
            Err(BandwidthError::Zero { field: None })
        );
        assert_eq!(
            Rates::parse_cap("-5M"),
            Err(BandwidthError::Quantity {
                field: None,
                source: QuantityError::Negative
            })
        );
        assert!(matches!(
            Rates::parse_cap("10Q"),
            Err(BandwidthError::Quantity { field: None, .. })
        ));
    }

    #[test]
    fn parses_kraal_form() {
        let table: &[(&str, Rates)] = &[
            ("min=50M,max=200M", rates(50_000_000, 200_000_000, None)),
            (
                "min=50M,max=200M,burst=64Ki",
                rates(50_000_000, 200_000_000, Some(65_536)),
            ),
            (
                "burst=1Mi, max=1G ,min=1G",
                rates(1_000_000_000, 1_000_000_000, Some(1 << 20)),
            ),
            ("max=1M", rates(0, 1_000_000, None)),
            ("min=0,max=1M", rates(0, 1_000_000, None)),
        ];
        for (text, want) in table {
            assert_eq!(Rates::parse(text).as_ref(), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_bad_kraal_form() {
        let table: &[(&str, BandwidthError)] = &[
            ("", BandwidthError::Empty),
            ("min=1M", BandwidthError::MissingMax),
            ("100M", BandwidthError::NotAssignment("100M".into())),
            ("max=1M,", BandwidthError::EmptyEntry { position: 2 }),
            (
                "max=1M,speed=3",
                BandwidthError::UnknownField("speed".into()),
            ),
            ("max=1M,max=2M", BandwidthError::Duplicate("max")),
            (
                "min=300M,max=200M",
                BandwidthError::MinAboveMax {
                    min: 300_000_000,
                    max: 200_000_000,
                },
            ),
            ("max=0", BandwidthError::Zero { field: Some("max") }),
            (
                "max=1M,burst=0",
                BandwidthError::Zero {
                    field: Some("burst"),
                },
            ),
            (
                "min=-1M,max=1M",
                BandwidthError::Quantity {
                    field: Some("min"),
                    source: QuantityError::Negative,
                },
            ),
            (
                "max=",
                BandwidthError::Quantity {
                    field: Some("max"),
                    source: QuantityError::Empty,
                },
            ),
        ];
        for (text, want) in table {
            assert_eq!(Rates::parse(text).as_ref(), Err(want), "{text}");
        }
    }

    #[test]
    fn displays_in_annotation_form() {
        assert_eq!(rates(1, 2, Some(3)).to_string(), "min=1,max=2,burst=3");
        assert_eq!(
            Rates::parse(&rates(0, 9, None).to_string()),
            Ok(rates(0, 9, None))
        );
    }
}
