//! Times parsing and lowering of a Dockerfile with an in-memory resolver,
//! by phase: `cargo run --release -p rbuild-frontend --example parse_lower
//! -- FILE [ITERATIONS]`. Prints `parse+lower: X.XXX ms` per iteration like
//! `rbuild debug graph --timings`, then the median of each phase.

use std::time::Instant;

use rbuild_cache::oci::ImageConfig;
use rbuild_frontend::lower::{ImageConfigResolver, LowerOptions, ResolveError, ResolvedBase, lower};
use rbuild_solver::graph::Platform;

/// Every image resolves at once to an empty config.
struct Images;

impl ImageConfigResolver for Images {
    fn resolve_all(&self, requests: &[(String, Platform)]) -> Vec<Result<ResolvedBase, ResolveError>> {
        requests
            .iter()
            .map(|(r, p)| {
                let config =
                    ImageConfig { architecture: p.architecture.clone(), os: p.os.clone(), ..Default::default() };
                Ok(ResolvedBase { reference: format!("docker.io/library/{r}@sha256:{}", "0".repeat(64)), config })
            })
            .collect()
    }
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(file) = args.next() else {
        eprintln!("usage: parse_lower FILE [ITERATIONS]");
        std::process::exit(2);
    };
    let iterations: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("reading {file}: {e}"));
    let opts = LowerOptions::default();
    let (mut parse, mut typed, mut lowering, mut total) = (vec![], vec![], vec![], vec![]);
    let mut vertices = 0;
    for _ in 0..iterations {
        let t0 = Instant::now();
        let t = Instant::now();
        let ast = rbuild_frontend::parser::parse(&text).expect("parse");
        parse.push(ms(t));
        let t = Instant::now();
        let df = rbuild_frontend::instructions::from_ast(&ast, &text).expect("instructions");
        typed.push(ms(t));
        let t = Instant::now();
        let built = lower(&df, &opts, &Images).expect("lower");
        lowering.push(ms(t));
        total.push(ms(t0));
        vertices = built.definition.vertices.len();
        eprintln!("parse+lower: {:.3} ms", ms(t0));
    }
    println!(
        "{file}: {} lines, {vertices} vertices; median parse {:.3} ms, instructions {:.3} ms, lower {:.3} ms, total {:.3} ms",
        text.lines().count(),
        median(parse),
        median(typed),
        median(lowering),
        median(total)
    );
}
