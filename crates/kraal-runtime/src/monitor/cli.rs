//! Command line of `kraal-monitor` (parsed by hand: three subcommands, a few flags).

use std::ffi::OsString;
use std::path::PathBuf;

const USAGE: &str = "usage:
  kraal-monitor create --config <monitor.json>
  kraal-monitor delete --root <libcontainer-root> --id <container-id>
  kraal-monitor exec --config <exec.json>";

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Create { config: PathBuf },
    Delete { root: PathBuf, id: String },
    Exec { config: PathBuf },
    Help,
}

/// Parses the arguments after the program name. Flags may come in any order, as
/// `--flag value` or `--flag=value`.
pub fn parse(args: &[OsString]) -> Result<Command, String> {
    let Some((sub, rest)) = args.split_first() else {
        return Err("missing subcommand".into());
    };
    let sub = sub.to_str().ok_or("subcommand is not UTF-8")?;
    let allowed: &[&str] = match sub {
        "create" | "exec" => &["config"],
        "delete" => &["root", "id"],
        "help" | "--help" | "-h" => return Ok(Command::Help),
        other => return Err(format!("unknown subcommand {other:?}")),
    };
    let mut values: Vec<(&str, OsString)> = Vec::new();
    let mut i = 0;
    while i < rest.len() {
        let arg = rest[i]
            .to_str()
            .ok_or_else(|| format!("{sub}: argument {:?} is not UTF-8", rest[i]))?;
        if arg == "--help" || arg == "-h" {
            return Ok(Command::Help);
        }
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(format!("{sub}: unexpected argument {arg:?}"));
        };
        let (name, value) = match flag.split_once('=') {
            Some((name, value)) => (name, OsString::from(value)),
            None => {
                i += 1;
                let value = rest
                    .get(i)
                    .ok_or_else(|| format!("{sub}: --{flag} needs a value"))?;
                (flag, value.clone())
            }
        };
        let Some(&name) = allowed.iter().find(|&&a| a == name) else {
            return Err(format!("{sub}: unknown flag --{name}"));
        };
        if values.iter().any(|(n, _)| *n == name) {
            return Err(format!("{sub}: --{name} given twice"));
        }
        values.push((name, value));
        i += 1;
    }
    let mut take = |name: &str| {
        values
            .iter()
            .position(|(n, _)| *n == name)
            .map(|p| values.swap_remove(p).1)
            .ok_or_else(|| format!("{sub}: missing --{name}"))
    };
    Ok(match sub {
        "create" => Command::Create {
            config: take("config")?.into(),
        },
        "exec" => Command::Exec {
            config: take("config")?.into(),
        },
        _ => {
            let root = take("root")?.into();
            let id = take("id")?
                .into_string()
                .map_err(|id| format!("delete: --id {id:?} is not UTF-8"))?;
            Command::Delete { root, id }
        }
    })
}

/// Runs `kraal-monitor` with `args` (without the program name); returns the exit code.
pub fn run(args: &[OsString]) -> i32 {
    let command = match parse(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kraal-monitor: {e}\n{USAGE}");
            return 2;
        }
    };
    match command {
        Command::Help => {
            println!("{USAGE}");
            0
        }
        Command::Create { config } => super::create::run(&config),
        Command::Delete { root, id } => super::delete::run(&root, &id),
        Command::Exec { config } => super::exec::run(&config),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_subcommands() {
        assert_eq!(
            parse(&args(&["create", "--config", "/x/monitor.json"])),
            Ok(Command::Create {
                config: "/x/monitor.json".into()
            })
        );
        assert_eq!(
            parse(&args(&["delete", "--id=c1", "--root", "/r"])),
            Ok(Command::Delete {
                root: "/r".into(),
                id: "c1".into()
            })
        );
        assert_eq!(
            parse(&args(&["exec", "--config=/e.json"])),
            Ok(Command::Exec {
                config: "/e.json".into()
            })
        );
        assert_eq!(parse(&args(&["--help"])), Ok(Command::Help));
        assert_eq!(parse(&args(&["delete", "-h"])), Ok(Command::Help));
    }

    #[test]
    fn rejects_bad_command_lines() {
        for (bad, expect) in [
            (&[][..], "missing subcommand"),
            (&["run"][..], "unknown subcommand"),
            (&["create"][..], "missing --config"),
            (&["create", "--config"][..], "needs a value"),
            (
                &["create", "--config", "a", "--config", "b"][..],
                "given twice",
            ),
            (&["create", "--root", "a"][..], "unknown flag --root"),
            (&["delete", "--root", "/r"][..], "missing --id"),
            (&["exec", "stray"][..], "unexpected argument"),
        ] {
            let err = parse(&args(bad)).expect_err("must fail");
            assert!(err.contains(expect), "{bad:?}: {err}");
        }
    }
}
