//! A pod's port lists and their translation to the kernel-side layout.

use crate::abi::{
    F_BIND, F_CONNECT, F_COUNT_UNSTEERED, F_DENY_UNSTEERED, F_RANDOM, KpCfg, KpSpan, MAX_SPANS,
};
use crate::error::{Error, Result};

/// How ephemeral ports are chosen inside a list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Allocator {
    /// Next port the pod does not hold, from a rotating cursor (the real allocator).
    #[default]
    Tracking,
    /// A uniformly random port of the list, held or not, without retry. Only a baseline for
    /// the benchmark: it fails whenever the pick is taken.
    Random,
}

/// A pod's local port lists: inclusive `(first, last)` ranges. An empty list leaves that side
/// unrestricted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodPorts {
    /// Ports the pod may bind explicitly; `bind(0)` gets one of them.
    pub bind: Vec<(u16, u16)>,
    /// Ports `connect()` on an unbound socket takes its local port from.
    pub connect: Vec<(u16, u16)>,
    pub allocator: Allocator,
    /// Refuse (`EPERM`) UDP sends from a socket the kernel autobound to a port outside the
    /// lists (a `sendto()` before any `bind()`/`connect()`), which no hook can steer; without
    /// it such sends are only counted (`Counters::unsteered_udp`). Only with a list.
    pub deny_unsteered: bool,
    /// Count such sends (`Counters::unsteered_udp`). Counting needs the sendmsg hooks, and a
    /// sendmsg hook attached anywhere makes every unconnected UDP send *on the host* take the
    /// socket lock and run the cgroup filter (about +7% per send measured), so it is a choice.
    /// Implied by `deny_unsteered`.
    pub count_unsteered: bool,
}

/// Sorts, rejects overlaps and empty or reversed ranges, and merges adjacent ranges so that
/// more user ranges fit the kernel's fixed number of spans.
fn to_spans(side: &str, ranges: &[(u16, u16)]) -> Result<(Vec<KpSpan>, u32)> {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut spans: Vec<KpSpan> = Vec::with_capacity(sorted.len());
    let mut total = 0u32;
    for (lo, hi) in sorted {
        if lo == 0 {
            return Err(Error::InvalidRanges(format!(
                "{side}: port 0 is not a port"
            )));
        }
        if lo > hi {
            return Err(Error::InvalidRanges(format!(
                "{side}: {lo}-{hi} is reversed"
            )));
        }
        total += u32::from(hi - lo) + 1;
        match spans.last_mut() {
            Some(last) if lo <= last.hi => {
                return Err(Error::InvalidRanges(format!(
                    "{side}: {lo}-{hi} overlaps {}-{}",
                    last.lo, last.hi
                )));
            }
            Some(last) if u32::from(lo) == u32::from(last.hi) + 1 => last.hi = hi,
            _ => spans.push(KpSpan { lo, hi }),
        }
    }
    if spans.len() > MAX_SPANS {
        return Err(Error::InvalidRanges(format!(
            "{side}: {} separate ranges, at most {MAX_SPANS}",
            spans.len()
        )));
    }
    Ok((spans, total))
}

impl PodPorts {
    pub(crate) fn to_cfg(&self) -> Result<KpCfg> {
        let mut cfg = KpCfg::default();
        let (bind, bind_total) = to_spans("bind", &self.bind)?;
        let (conn, conn_total) = to_spans("connect", &self.connect)?;
        if !bind.is_empty() {
            cfg.flags |= F_BIND;
        }
        if !conn.is_empty() {
            cfg.flags |= F_CONNECT;
        }
        if self.allocator == Allocator::Random {
            cfg.flags |= F_RANDOM;
        }
        if self.deny_unsteered {
            cfg.flags |= F_DENY_UNSTEERED;
        }
        if self.count_unsteered {
            cfg.flags |= F_COUNT_UNSTEERED;
        }
        // Lengths are bounded by MAX_SPANS above.
        cfg.n_bind = bind.len() as u16;
        cfg.n_conn = conn.len() as u16;
        cfg.bind_total = bind_total;
        cfg.conn_total = conn_total;
        cfg.bind[..bind.len()].copy_from_slice(&bind);
        cfg.conn[..conn.len()].copy_from_slice(&conn);
        Ok(cfg)
    }

    pub(crate) fn from_cfg(cfg: &KpCfg) -> PodPorts {
        let list = |spans: &[KpSpan], n: u16| {
            spans
                .iter()
                .take(usize::from(n).min(MAX_SPANS))
                .map(|s| (s.lo, s.hi))
                .collect()
        };
        PodPorts {
            bind: list(&cfg.bind, cfg.n_bind),
            connect: list(&cfg.conn, cfg.n_conn),
            allocator: if cfg.flags & F_RANDOM != 0 {
                Allocator::Random
            } else {
                Allocator::Tracking
            },
            deny_unsteered: cfg.flags & F_DENY_UNSTEERED != 0,
            count_unsteered: cfg.flags & F_COUNT_UNSTEERED != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(bind: &[(u16, u16)]) -> PodPorts {
        PodPorts {
            bind: bind.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn sorts_merges_and_counts() {
        let cfg = ports(&[(8080, 8080), (20000, 20049), (20050, 20099)])
            .to_cfg()
            .unwrap();
        assert_eq!(cfg.flags, F_BIND);
        assert_eq!(cfg.n_bind, 2);
        assert_eq!(cfg.bind_total, 101);
        assert_eq!(
            cfg.bind[1],
            KpSpan {
                lo: 20000,
                hi: 20099
            }
        );
        assert_eq!(
            PodPorts::from_cfg(&cfg).bind,
            vec![(8080, 8080), (20000, 20099)]
        );
    }

    #[test]
    fn rejects_bad_ranges() {
        for bad in [
            vec![(30, 20)],
            vec![(0, 10)],
            vec![(10, 20), (15, 30)],
            (0..17).map(|i| (100 + i * 10, 100 + i * 10)).collect(),
        ] {
            assert!(
                matches!(ports(&bad).to_cfg(), Err(Error::InvalidRanges(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn empty_lists_leave_hooks_unrestricted() {
        let cfg = PodPorts::default().to_cfg().unwrap();
        assert_eq!(cfg.flags, 0);
    }

    #[test]
    fn deny_unsteered_round_trips() {
        let p = PodPorts {
            deny_unsteered: true,
            ..ports(&[(20000, 20099)])
        };
        let cfg = p.to_cfg().unwrap();
        assert_eq!(cfg.flags, F_BIND | F_DENY_UNSTEERED);
        assert_eq!(PodPorts::from_cfg(&cfg), p);
    }

    #[test]
    fn full_port_space_fits() {
        let cfg = ports(&[(1, 65535)]).to_cfg().unwrap();
        assert_eq!(cfg.bind_total, 65535);
    }
}
