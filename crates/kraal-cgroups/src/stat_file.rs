//! Pure parsers for the text formats of cgroup control files.

/// A file holding one unsigned number, e.g. `cpuacct.usage` or `memory.current`.
pub(crate) fn single_u64(text: &str) -> Result<u64, String> {
    let t = text.trim();
    t.parse()
        .map_err(|_| format!("expected one unsigned number, found {t:?}"))
}

/// The value of `key` in a flat-keyed file (`key value` per line): `memory.stat`,
/// `cpu.stat`, `memory.events`, `memory.oom_control`. None when the key is absent or its
/// value is not a number.
pub(crate) fn flat_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        if fields.next()? != key {
            return None;
        }
        fields.next()?.parse().ok()
    })
}

/// A `cgroup.procs` listing: one pid per line.
pub(crate) fn pids(text: &str) -> Result<Vec<i32>, String> {
    text.split_whitespace()
        .map(|p| p.parse().map_err(|_| format!("bad pid {p:?}")))
        .collect()
}

/// A space-separated controller list (`cgroup.controllers`, `cgroup.subtree_control`).
pub(crate) fn controllers(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_MEMORY_STAT: &str = "\
cache 4325376
rss 270336
rss_huge 0
mapped_file 0
pgpgin 1234
pgfault 2211
pgmajfault 3
inactive_anon 270336
active_anon 0
inactive_file 4325376
active_file 0
hierarchical_memory_limit 9223372036854771712
total_cache 8650752
total_rss 540672
total_pgfault 4422
total_pgmajfault 6
total_inactive_anon 540672
total_active_anon 0
total_inactive_file 8650752
total_active_file 0
";

    const V2_CPU_STAT: &str = "\
usage_usec 1523
user_usec 1000
system_usec 523
nr_periods 0
nr_throttled 0
throttled_usec 0
";

    #[test]
    fn flat_keyed_finds_exact_keys() {
        assert_eq!(flat_keyed(V1_MEMORY_STAT, "total_rss"), Some(540672));
        // "rss" must not match "total_rss" or "rss_huge".
        assert_eq!(flat_keyed(V1_MEMORY_STAT, "rss"), Some(270336));
        assert_eq!(
            flat_keyed(V1_MEMORY_STAT, "total_inactive_file"),
            Some(8650752)
        );
        assert_eq!(flat_keyed(V1_MEMORY_STAT, "missing"), None);
        assert_eq!(flat_keyed(V2_CPU_STAT, "usage_usec"), Some(1523));
        assert_eq!(
            flat_keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", "oom_kill"),
            Some(2)
        );
        assert_eq!(flat_keyed("key notanumber\n", "key"), None);
        assert_eq!(flat_keyed("", "key"), None);
    }

    #[test]
    fn single_numbers() {
        assert_eq!(single_u64("123\n"), Ok(123));
        assert!(single_u64("max\n").unwrap_err().contains("\"max\""));
        assert!(single_u64("").is_err());
    }

    #[test]
    fn pid_lists() {
        assert_eq!(pids("1\n22\n333\n"), Ok(vec![1, 22, 333]));
        assert_eq!(pids(""), Ok(vec![]));
        assert!(pids("1\nx\n").unwrap_err().contains("\"x\""));
    }

    #[test]
    fn controller_lists() {
        assert_eq!(
            controllers("cpuset cpu io memory pids\n"),
            ["cpuset", "cpu", "io", "memory", "pids"]
        );
        assert!(controllers("\n").is_empty());
    }
}
