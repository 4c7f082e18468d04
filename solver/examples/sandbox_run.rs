//! Drives `rbuild_solver::sandbox` from the command line; used by `tests/sandbox.rs`.
//!
//! ```text
//! sandbox_run mapping                       print the id mapping (JSON, then description)
//! sandbox_run run <spec.json>               run, relay stdout/stderr, exit with the command's code
//! sandbox_run bench <spec.json> <n>         run n times (fresh upper/work dirs under the spec's upperdir), print `mean_ms=<x>`
//! sandbox_run kill <spec.json> <ms>         start, kill after ms, print `code=<c> elapsed_ms=<t>`
//! sandbox_run overlay <target> <upper|-> <work|-> <lower>... -- <cmd>...
//!                                           mount_overlay, then run a host command beside it
//! ```
//! Set-up errors exit with 90 after printing the error.

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use rbuild_solver::sandbox::{self, RunSpec};

fn fail(msg: String) -> ! {
    eprintln!("sandbox_run: {msg}");
    std::process::exit(90)
}

fn load(path: &str) -> RunSpec {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| fail(format!("reading {path}: {e}")));
    serde_json::from_str(&text).unwrap_or_else(|e| fail(format!("parsing {path}: {e}")))
}

fn relay(src: Option<std::fs::File>, to_stdout: bool) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        if let Some(mut f) = src {
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            use std::io::Write;
            if to_stdout {
                let _ = std::io::stdout().write_all(&buf);
            } else {
                let _ = std::io::stderr().write_all(&buf);
            }
        }
    })
}

fn main() {
    // First thing, before any thread: may turn this process into a sandbox init.
    let mapping = sandbox::init_process().unwrap_or_else(|e| fail(format!("init_process: {}", chain(&e))));
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("mapping") => {
            println!("{}", serde_json::to_string(&mapping).unwrap_or_default());
            println!("{}", mapping.describe());
        }
        Some("run") if args.len() == 3 => {
            let spec = load(&args[2]);
            let mut child = sandbox::spawn(&spec).unwrap_or_else(|e| fail(chain(&e)));
            let out = relay(child.take_stdout(), true);
            let err = relay(child.take_stderr(), false);
            let code = child.wait().unwrap_or_else(|e| fail(chain(&e)));
            let _ = out.join();
            let _ = err.join();
            std::process::exit(code);
        }
        Some("bench") if args.len() == 4 => {
            let spec = load(&args[2]);
            let n: u32 = args[3].parse().unwrap_or_else(|_| fail("bad count".into()));
            let start = Instant::now();
            let base = spec.upperdir.clone();
            for i in 0..n {
                // Every RUN gets a fresh upper and (empty) work dir, as in the solver.
                let mut spec = spec.clone();
                spec.upperdir = base.join(format!("up{i}"));
                spec.workdir = base.join(format!("wk{i}"));
                for d in [&spec.upperdir, &spec.workdir] {
                    std::fs::create_dir_all(d).unwrap_or_else(|e| fail(format!("creating {}: {e}", d.display())));
                }
                let mut child = sandbox::spawn(&spec).unwrap_or_else(|e| fail(chain(&e)));
                let code = child.wait().unwrap_or_else(|e| fail(chain(&e)));
                if code != 0 {
                    fail(format!("exit code {code}"));
                }
            }
            println!("mean_ms={:.3}", start.elapsed().as_secs_f64() * 1000.0 / f64::from(n.max(1)));
        }
        Some("kill") if args.len() == 4 => {
            let spec = load(&args[2]);
            let ms: u64 = args[3].parse().unwrap_or_else(|_| fail("bad ms".into()));
            let mut child = sandbox::spawn(&spec).unwrap_or_else(|e| fail(chain(&e)));
            let out = relay(child.take_stdout(), true);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            let start = Instant::now();
            child.kill();
            let code = child.wait().unwrap_or_else(|e| fail(chain(&e)));
            // stdout reaches EOF only when every process of the sandbox is gone.
            let _ = out.join();
            println!("code={code} elapsed_ms={}", start.elapsed().as_millis());
        }
        Some("overlay") if args.len() >= 6 => {
            let target = PathBuf::from(&args[2]);
            let sep = args.iter().position(|a| a == "--").unwrap_or_else(|| fail("missing --".into()));
            let lowers: Vec<PathBuf> = args[5..sep].iter().map(PathBuf::from).collect();
            let (up, work) = (PathBuf::from(&args[3]), PathBuf::from(&args[4]));
            let upper = if args[3] == "-" { None } else { Some((up.as_path(), work.as_path())) };
            let guard = sandbox::mount_overlay(&lowers, upper, &target).unwrap_or_else(|e| fail(chain(&e)));
            let status = std::process::Command::new(&args[sep + 1])
                .args(&args[sep + 2..])
                .status()
                .unwrap_or_else(|e| fail(format!("running command: {e}")));
            // Writable copy-fallback views write their changes to the upper dir here.
            guard.finish().unwrap_or_else(|e| fail(chain(&e)));
            std::process::exit(status.code().unwrap_or(1));
        }
        _ => fail("usage: sandbox_run mapping | run <spec> | bench <spec> <n> | kill <spec> <ms> | overlay ...".into()),
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
