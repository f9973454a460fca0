/// kraald's own oom_score_adj. Some hosts (this project's CI VMs among them) refuse to set a
/// child's value below its parent's, so that is the lowest value a container can get.
pub fn current() -> i32 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(-1000)
}
