//! Facts about the node's own devices that the shaping setup needs: which device the default
//! route uses, and how fast a device says it is.

use std::path::Path;

use crate::error::{Error, Result};

const ROUTES_V4: &str = "/proc/net/route";
const ROUTES_V6: &str = "/proc/net/ipv6_route";

/// The device of the host's default route: IPv4 first, then IPv6; None when there is none.
pub fn default_route_device() -> Result<Option<String>> {
    if let Some(dev) = read_routes(ROUTES_V4, default_v4)? {
        return Ok(Some(dev));
    }
    read_routes(ROUTES_V6, default_v6)
}

fn read_routes(path: &str, pick: fn(&str) -> Option<String>) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.lines().find_map(pick)),
        // No IPv6 on the host: no IPv6 routes.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            what: format!("reading {path}"),
            source,
        }),
    }
}

/// `/proc/net/route`: `Iface Destination Gateway Flags RefCnt Use Metric Mask ...`, hex; a
/// default route has destination and mask 0 and is up (flag 0x1).
fn default_v4(line: &str) -> Option<String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [dev, dest, _gw, flags, _, _, _, mask, ..] = fields.as_slice() else {
        return None;
    };
    let up = u32::from_str_radix(flags, 16).ok()? & 0x1 != 0;
    (*dest == "00000000" && *mask == "00000000" && up).then(|| dev.to_string())
}

/// `/proc/net/ipv6_route`: `dest dest_len src src_len next_hop metric refcnt use flags dev`;
/// a default route is `::/0` through a real device (not the `lo` of unreachable routes).
fn default_v6(line: &str) -> Option<String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [dest, len, .., flags, dev] = fields.as_slice() else {
        return None;
    };
    let up = u32::from_str_radix(flags, 16).ok()? & 0x1 != 0;
    let is_default = dest.chars().all(|c| c == '0') && *len == "00";
    (is_default && up && *dev != "lo").then(|| dev.to_string())
}

/// The speed a device reports in `/sys/class/net/<dev>/speed` (Mbit/s), as bits/s; None when
/// it reports none (virtual devices, a link that is down).
pub fn link_speed_bps(device: &str) -> Option<u64> {
    let path = Path::new("/sys/class/net").join(device).join("speed");
    let mbits: i64 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
    (mbits > 0).then(|| mbits as u64 * 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_routes_are_found_in_proc_lines() {
        let v4 = "eth0\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0";
        assert_eq!(default_v4(v4), Some("eth0".into()));
        let net = "eth0\t0002A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0";
        assert_eq!(default_v4(net), None);
        assert_eq!(default_v4("Iface\tDestination\tGateway"), None);
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003 eth1";
        assert_eq!(default_v6(v6), Some("eth1".into()));
        let unreachable = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200 lo";
        assert_eq!(default_v6(unreachable), None);
    }
}
