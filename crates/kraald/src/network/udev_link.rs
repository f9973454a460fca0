//! systemd nodes: keep udev from giving pods' host-side veths a new MAC.
//!
//! systemd-udevd's default link policy (`99-default.link`, `MACAddressPolicy=persistent`)
//! gives every new interface a MAC derived from its name, just after it appears. The bridge
//! plugin has by then recorded the MAC the kernel chose in its result, so its CHECK after a
//! kraald restart fails (`Interface vethXXXX Mac doesn't match`) although nothing is wrong,
//! and the bridge briefly learns an address that then vanishes. Node agents (Flannel, Cilium)
//! answer this with a `.link` file that exempts their veths; kraald writes one at start rather
//! than leaving it to each way of installing kraal, and writes it under /run, so it lives
//! exactly as long as this boot and needs no uninstall.

use std::path::{Path, PathBuf};

use kraal_runtime::fsutil::write_atomic;

/// systemd's runtime directory for `.link` files (read besides /etc and /usr/lib).
const LINK_DIR: &str = "/run/systemd/network";

/// Sorted before `99-default.link`; udev applies the first file that matches.
const LINK_FILE: &str = "90-kraal-veth.link";

/// The host ends of the bridge plugin's veth pairs are named `veth<8 hex>`; matching the
/// driver as well keeps any other device called veth* out of it.
const LINK_TEXT: &str = "\
# Written by kraald at start; /run goes away at reboot and kraald writes it again.
# Pods' host-side veths keep the MAC the kernel gave them: the CNI bridge plugin recorded it,
# and udev's default MACAddressPolicy=persistent would change it just after the veth appears.
[Match]
OriginalName=veth*
Driver=veth

[Link]
MACAddressPolicy=none
";

/// Whether systemd is PID 1 (sd_booted's test). Only there is udev's default policy the
/// systemd one.
fn systemd_booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Puts the link file in place on systemd nodes and has udev reload its rules; no-op elsewhere.
/// Failure is logged, not fatal: pods still start, only CHECK after a restart may complain.
pub fn ensure() {
    if !systemd_booted() {
        return;
    }
    match write_if_changed(Path::new(LINK_DIR)) {
        Ok(Some(path)) => {
            tracing::info!(file = %path.display(), "wrote udev link policy for pod veths (MACAddressPolicy=none)");
            reload_udev();
        }
        Ok(None) => {}
        Err(err) => tracing::warn!(
            "writing {LINK_DIR}/{LINK_FILE}: {err}; udev may change pod veths' MACs and CNI CHECK may then fail"
        ),
    }
}

/// Writes the file into `dir` unless it already holds exactly this text; the path written.
fn write_if_changed(dir: &Path) -> std::io::Result<Option<PathBuf>> {
    let path = dir.join(LINK_FILE);
    if std::fs::read_to_string(&path).is_ok_and(|text| text == LINK_TEXT) {
        return Ok(None);
    }
    std::fs::create_dir_all(dir)?;
    write_atomic(&path, LINK_TEXT.as_bytes())?;
    Ok(Some(path))
}

/// udev re-reads link files when their directories change, but not every version checks; an
/// explicit reload makes the next veth see the file.
fn reload_udev() {
    match std::process::Command::new("udevadm")
        .args(["control", "--reload"])
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => tracing::warn!(
            "udevadm control --reload: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(err) => tracing::warn!("udevadm control --reload: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_exempts_only_veths_from_the_mac_policy() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("network");
        let written = write_if_changed(&sub).unwrap().expect("first write");
        assert_eq!(written, sub.join("90-kraal-veth.link"));
        let text = std::fs::read_to_string(&written).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "[Match]",
                "OriginalName=veth*",
                "Driver=veth",
                "",
                "[Link]",
                "MACAddressPolicy=none"
            ]
        );
        // Sorted before systemd's default, which would otherwise match first.
        assert!(LINK_FILE < "99-default.link");
        // Unchanged text is not rewritten (no needless udev reload at every start).
        assert_eq!(write_if_changed(&sub).unwrap(), None);
        std::fs::write(&written, "stale").unwrap();
        assert!(write_if_changed(&sub).unwrap().is_some());
        assert_eq!(std::fs::read_to_string(&written).unwrap(), LINK_TEXT);
    }
}
