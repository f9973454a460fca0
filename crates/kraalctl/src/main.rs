//! kraalctl: the kraal admin CLI. It talks to kraald's admin API (`kraal.v1`) on its own
//! root-only unix socket; `kraalctl cri ...` only reads what kraald serves on the CRI socket
//! (version, pods, containers, images), for a node without kubelet or crictl.
//!
//! Exit codes: 0 on success, 1 when kraald could not be reached or answered with an error
//! (`kraalctl: <code>: <message>` on stderr), 2 for a usage error.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod args;
mod client;
mod cri;
mod render;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::error::ErrorKind;
use clap::{CommandFactory as _, Parser, Subcommand, ValueEnum};
use kraal_api::kraal::v1::{
    FreezePodRequest, GetPodPolicyRequest, ThawPodRequest, UpdatePodPolicyRequest,
};

use crate::args::Change;
use crate::client::status_error;

#[derive(Debug, Parser)]
#[command(
    name = "kraalctl",
    version,
    about = "kraal's admin CLI: freeze and thaw pods, show and change their isolation policy; list what kraald serves over CRI",
    after_help = "A pod is named by its sandbox id, a unique prefix of the id, its name (when only one pod \
                  has it) or namespace/name.\nThe admin socket is root only: run kraalctl as root on the node."
)]
struct Cli {
    /// kraald's admin socket
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "KRAAL_ADMIN_SOCKET",
        default_value = client::DEFAULT_SOCKET
    )]
    socket: PathBuf,

    /// kraald's CRI socket, for `kraalctl cri`
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "KRAAL_CRI_SOCKET",
        default_value = cri::DEFAULT_SOCKET
    )]
    cri_socket: PathBuf,

    /// Output format
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Human)]
    output: Output,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Short text for people
    Human,
    /// One JSON object rendering kraald's response
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Freeze, thaw, show or change the policy of a pod
    #[command(subcommand)]
    Pod(PodCommand),
    /// Read what kraald serves on its CRI socket (as crictl would): version, pods, containers, images
    #[command(subcommand)]
    Cri(cri::CriCommand),
}

#[derive(Debug, Subcommand)]
enum PodCommand {
    /// Freeze every container of the pod (cgroup freezer); exec into it is refused until thawed
    Freeze {
        /// Pod id, unique id prefix, name or namespace/name
        pod: String,
        /// How long to wait for every task to be frozen, e.g. 500ms, 5s [default: kraald's, 5s]
        #[arg(long, value_name = "DURATION", value_parser = args::parse_timeout_ms)]
        timeout: Option<u32>,
    },
    /// Thaw what `pod freeze` froze
    Thaw {
        /// Pod id, unique id prefix, name or namespace/name
        pod: String,
    },
    /// Show the pod's policy annotations and every cgroup file kraal wrote for them
    Policy {
        /// Pod id, unique id prefix, name or namespace/name
        pod: String,
    },
    /// Change a running pod's policy annotations and apply them without restarting anything
    #[command(
        after_help = "Examples:\n  kraalctl pod update kraal-e2e/web kraal.dev/cpu-burst=500m\n  \
                      kraalctl pod update kraal-e2e/web kraal.dev/cpu-burst- --dry-run"
    )]
    Update {
        /// Pod id, unique id prefix, name or namespace/name
        pod: String,
        /// KEY=VALUE sets an annotation, KEY- removes it (as kubectl annotate)
        #[arg(
            required = true,
            value_name = "KEY=VALUE|KEY-",
            value_parser = args::parse_change
        )]
        changes: Vec<Change>,
        /// Validate and show what would be applied, change nothing
        #[arg(long)]
        dry_run: bool,
    },
}

/// One admin call, fully formed from the command line.
enum Call {
    Cri(cri::CriCommand),
    Freeze(FreezePodRequest),
    Thaw(ThawPodRequest),
    Policy(GetPodPolicyRequest),
    Update(UpdatePodPolicyRequest),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let call = match call(cli.command) {
        Ok(call) => call,
        Err(message) => usage_error(&["pod", "update"], message),
    };

    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|runtime| runtime.block_on(run(&cli.socket, &cli.cri_socket, cli.output, call)));
    let written = result.and_then(|text| print(&text));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "kraalctl: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Reports a usage error of a subcommand the way clap does, and exits with its code (2).
fn usage_error(subcommand: &[&str], message: String) -> ! {
    let mut command = Cli::command();
    command.build();
    for name in subcommand {
        match command.find_subcommand(name) {
            Some(sub) => command = sub.clone(),
            None => break,
        }
    }
    command.error(ErrorKind::ArgumentConflict, message).exit()
}

/// The request a command asks for, or a usage error.
fn call(command: Command) -> Result<Call, String> {
    let command = match command {
        Command::Pod(command) => command,
        Command::Cri(command) => return Ok(Call::Cri(command)),
    };
    Ok(match command {
        PodCommand::Freeze { pod, timeout } => Call::Freeze(FreezePodRequest {
            pod,
            timeout_ms: timeout.unwrap_or(0),
        }),
        PodCommand::Thaw { pod } => Call::Thaw(ThawPodRequest { pod }),
        PodCommand::Policy { pod } => Call::Policy(GetPodPolicyRequest { pod }),
        PodCommand::Update {
            pod,
            changes,
            dry_run,
        } => {
            let changes = args::collect_changes(&changes)?;
            Call::Update(UpdatePodPolicyRequest {
                pod,
                set: changes.set.into_iter().collect::<HashMap<_, _>>(),
                remove: changes.remove,
                dry_run,
            })
        }
    })
}

/// Makes the call and renders the answer.
async fn run(
    admin_socket: &Path,
    cri_socket: &Path,
    output: Output,
    call: Call,
) -> anyhow::Result<String> {
    let json = output == Output::Json;
    // Connected only for an admin call: `kraalctl cri` needs no admin socket.
    let admin = || client::connect(admin_socket);
    let text = match call {
        Call::Freeze(request) => render_as(
            json,
            &answer(admin().await?.freeze_pod(request).await)?,
            render::freeze_json,
            render::freeze_human,
        )?,
        Call::Thaw(request) => render_as(
            json,
            &answer(admin().await?.thaw_pod(request).await)?,
            render::thaw_json,
            render::thaw_human,
        )?,
        Call::Policy(request) => render_as(
            json,
            &answer(admin().await?.get_pod_policy(request).await)?,
            render::policy_json,
            render::policy_human,
        )?,
        Call::Cri(command) => cri::run(cri_socket, json, command).await?,
        Call::Update(request) => {
            let dry_run = request.dry_run;
            render_as(
                json,
                &answer(admin().await?.update_pod_policy(request).await)?,
                render::policy_json,
                |status| render::update_human(status, dry_run),
            )?
        }
    };
    Ok(text)
}

/// The response of a call, or the one-line error kraalctl prints for its status.
fn answer<T>(result: Result<tonic::Response<T>, tonic::Status>) -> anyhow::Result<T> {
    result
        .map(tonic::Response::into_inner)
        .map_err(|s| status_error(&s))
}

/// `response` as JSON or for a human.
fn render_as<T>(
    json: bool,
    response: &T,
    as_json: fn(&T) -> serde_json::Result<String>,
    as_human: impl FnOnce(&T) -> String,
) -> anyhow::Result<String> {
    Ok(if json {
        as_json(response)?
    } else {
        as_human(response)
    })
}

/// Writes the output; a reader that went away early (`| head`) is not an error.
fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(err).context("writing to stdout")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn update_builds_one_request() {
        let cli = Cli::try_parse_from([
            "kraalctl",
            "pod",
            "update",
            "ns/web",
            "kraal.dev/cpu-burst=500m",
            "kraal.dev/memory-high-",
            "--dry-run",
        ])
        .unwrap();
        let Ok(Call::Update(request)) = call(cli.command) else {
            panic!("not an update");
        };
        assert_eq!(request.pod, "ns/web");
        assert_eq!(request.set.len(), 1);
        assert_eq!(request.set["kraal.dev/cpu-burst"], "500m");
        assert_eq!(request.remove, ["kraal.dev/memory-high"]);
        assert!(request.dry_run);
    }

    #[test]
    fn usage_errors() {
        for argv in [
            &["kraalctl", "pod", "update", "web"][..],
            &["kraalctl", "pod", "update", "web", "kraal.dev/cpu-burst"],
            &["kraalctl", "pod", "freeze", "web", "--timeout", "5"],
            &["kraalctl", "-o", "yaml", "pod", "policy", "web"],
        ] {
            let err = Cli::try_parse_from(argv).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{argv:?}");
        }
        let err = Cli::try_parse_from(["kraalctl", "pod", "update", "web", "kraal.dev/cpu-burst"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("kraal.dev/cpu-burst"), "{err}");
        assert!(err.contains("KEY=VALUE"), "{err}");

        let cli = Cli::try_parse_from(["kraalctl", "pod", "update", "web", "a=1", "a-"]).unwrap();
        assert!(call(cli.command).is_err());
    }

    #[test]
    fn global_options_go_anywhere() {
        let cli = Cli::try_parse_from([
            "kraalctl",
            "pod",
            "freeze",
            "web",
            "--timeout",
            "2s",
            "-o",
            "json",
            "--socket",
            "/x",
        ])
        .unwrap();
        assert_eq!(cli.output, Output::Json);
        assert_eq!(cli.socket, Path::new("/x"));
        let Ok(Call::Freeze(request)) = call(cli.command) else {
            panic!("not a freeze");
        };
        assert_eq!(request.timeout_ms, 2000);
    }
}
