//! `kraal-monitor`: the per-container monitor process. All logic lives in
//! `kraal_runtime::monitor`; see its documentation for the subcommands.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    std::process::exit(kraal_runtime::monitor::cli::run(&args));
}
