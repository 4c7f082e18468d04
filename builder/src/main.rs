//! `rbuild`: a daemonless, rootless container image builder.
//!
//! `main` enters the process-wide user namespace before anything else (the
//! kernel refuses `unshare(CLONE_NEWUSER)` once threads exist), then parses
//! the command line and hands over to `commands`.
#![deny(unsafe_code)]

mod cli;
mod commands;
mod config;
mod engine;
mod export;
mod fetch;
mod frontend_input;
mod import;
mod progress;
mod registry;
mod remote_cache;
mod request;
mod sources;

// The build graph is many small strings (env lists, paths, digests): glibc
// malloc made parse+lower of a 5,000-instruction file ~25% slower.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // Re-executed sandbox inits never return from here.
    let mapping = match rbuild_solver::sandbox::init_process() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: cannot enter a user namespace: {e}");
            eprintln!("hint: rbuild needs unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1)");
            std::process::exit(1);
        }
    };
    let cli = cli::Cli::parse_args();
    let code = match commands::run(cli, mapping) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    // Every sandbox has ended: let the zygote exit and collect it (its CPU
    // time, and its steps', then count as this process's).
    rbuild_solver::sandbox::shutdown();
    std::process::exit(code);
}
