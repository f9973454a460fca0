//! Running iproute2's `tc` and `ip`.

use std::process::Command;

use crate::error::{Error, Result};
use crate::netns::{Netns, shown};

/// Runs `program args...` in `netns`; a non-zero exit is an error carrying its stderr.
pub(crate) fn run(netns: &Netns, program: &str, args: &[String]) -> Result<()> {
    let mut cmd = Command::new(program);
    cmd.args(args).env("LC_ALL", "C");
    let command = shown(&cmd);
    let out = netns.output(&mut cmd)?;
    if !out.status.success() {
        return Err(Error::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    tracing::debug!(%command, "ran");
    Ok(())
}

/// Like [`run`], but a failure whose message says the object is not there counts as done.
pub(crate) fn run_absent_ok(netns: &Netns, program: &str, args: &[String]) -> Result<bool> {
    match run(netns, program, args) {
        Ok(()) => Ok(true),
        Err(Error::Command { stderr, .. }) if says_absent(&stderr) => Ok(false),
        Err(e) => Err(e),
    }
}

fn says_absent(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    ["no such file", "cannot find", "does not exist", "not found"]
        .iter()
        .any(|m| s.contains(m))
}

/// Splits a command line made of words that hold no whitespace (device names cannot).
pub(crate) fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_objects_are_recognised() {
        assert!(says_absent("RTNETLINK answers: No such file or directory"));
        assert!(says_absent("Error: Cannot find specified class"));
        assert!(says_absent("Cannot find device \"kraal-ifb3\""));
        assert!(!says_absent("RTNETLINK answers: Invalid argument"));
    }
}
