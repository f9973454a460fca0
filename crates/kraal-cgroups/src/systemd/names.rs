//! systemd unit names for pods and containers, and where their cgroups are.
//!
//! systemd nests slices by name: `a-b-c.slice` is a child of `a-b.slice`, itself a child of
//! `a.slice`, and its cgroup is `/a.slice/a-b.slice/a-b-c.slice`. kubelet's systemd driver
//! passes the pod's slice in that form (`kubepods-besteffort-pod<uid>.slice`); kraal keeps
//! the expanded path as the pod's cgroupfs path so everything that reads or writes cgroup
//! files works the same with either driver.

use super::SystemdError;

const SLICE: &str = ".slice";

/// Checks a slice name the way systemd's `slice_build_parent_slice`/`unit_name_is_valid`
/// would, and returns its cgroup path: `a-b.slice` -> `/a.slice/a-b.slice`; `-.slice` (the
/// root slice) -> `/`.
pub fn expand_slice(name: &str) -> Result<String, SystemdError> {
    let invalid = |reason: &'static str| SystemdError::InvalidName {
        name: name.to_string(),
        reason,
    };
    let Some(stem) = name.strip_suffix(SLICE) else {
        return Err(invalid("a slice name ends in .slice"));
    };
    if stem == "-" {
        return Ok("/".to_string());
    }
    if stem.is_empty() {
        return Err(invalid("empty slice name"));
    }
    if !valid_unit_chars(stem) {
        return Err(invalid(
            "unit names use only ASCII letters, digits and \":_.\\-\"",
        ));
    }
    if name.len() > MAX_UNIT_NAME {
        return Err(invalid("longer than systemd's 255-byte unit name limit"));
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        // `a--b.slice`, `-a.slice` and `a-.slice` name no parent systemd could build.
        if part.is_empty() {
            return Err(invalid("empty part between dashes"));
        }
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push('/');
        path.push_str(&prefix);
        path.push_str(SLICE);
    }
    Ok(path)
}

/// systemd's limit on a unit name (UNIT_NAME_MAX).
const MAX_UNIT_NAME: usize = 255;

fn valid_unit_chars(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.' | b'\\' | b'-'))
}

/// The last path component of an expanded slice path: its unit name.
pub fn slice_of_path(path: &str) -> Option<&str> {
    path.rsplit('/').next().filter(|n| n.ends_with(SLICE))
}

/// The slice kraal makes for a pod that came without a parent. `kraal-pod<id>` rather than
/// `kraal-pod-<id>`: a dash would make `kraal-pod.slice` its parent. All of kraal's own
/// pods then sit under `kraal.slice`, as they sit under `/kraal` with cgroupfs.
pub fn default_pod_slice(sandbox_id: &str) -> String {
    format!("kraal-pod{sandbox_id}{SLICE}")
}

/// The transient scope of one container (or of a pod's shared-PID infra process).
pub fn container_scope(container_id: &str) -> String {
    format!("kraal-{container_id}.scope")
}

/// The scope of a pod's shared-PID infra process: its own leaf in the pod slice, since on
/// v2 no process may sit in the slice itself once its children use controllers.
pub fn infra_scope(sandbox_id: &str) -> String {
    format!("kraal-infra-{sandbox_id}.scope")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_expand_to_their_parents() {
        assert_eq!(
            expand_slice("kubepods-besteffort-pod1234.slice").unwrap(),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice"
        );
        assert_eq!(expand_slice("a.slice").unwrap(), "/a.slice");
        assert_eq!(expand_slice("-.slice").unwrap(), "/");
        assert_eq!(
            expand_slice("kubepods-pod0a_b.slice").unwrap(),
            "/kubepods.slice/kubepods-pod0a_b.slice"
        );
    }

    #[test]
    fn malformed_slices_are_refused_with_a_reason() {
        for bad in [
            "kubepods",
            ".slice",
            "a--b.slice",
            "-a.slice",
            "a-.slice",
            "/kubepods/pod1",
            "a/b.slice",
            "a b.slice",
            "kraal-1.scope",
        ] {
            let err = expand_slice(bad).expect_err(bad).to_string();
            assert!(err.contains(bad), "{bad}: {err}");
        }
        let long = format!("{}.slice", "a".repeat(260));
        assert!(expand_slice(&long).is_err());
    }

    #[test]
    fn kraal_names_nest_under_kraal_slice() {
        let slice = default_pod_slice("0123abcd");
        assert_eq!(slice, "kraal-pod0123abcd.slice");
        assert_eq!(
            expand_slice(&slice).unwrap(),
            "/kraal.slice/kraal-pod0123abcd.slice"
        );
        assert_eq!(container_scope("ff00"), "kraal-ff00.scope");
        assert_eq!(infra_scope("ab"), "kraal-infra-ab.scope");
        assert_eq!(
            slice_of_path("/kraal.slice/kraal-podab.slice"),
            Some("kraal-podab.slice")
        );
        assert_eq!(slice_of_path("/kraal/pod-ab"), None);
    }
}
