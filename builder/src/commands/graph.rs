//! `rbuild debug graph`: the lowered graph as JSON, in topological order.

use std::path::PathBuf;

use anyhow::Result;
use rbuild_frontend::lower;
use rbuild_solver::sandbox::IdMapping;

use crate::cli::GraphArgs;
use crate::frontend_input;
use crate::request::BuildRequest;
use crate::sources::Sources;

pub fn run(graph_args: GraphArgs, root: PathBuf, mapping: IdMapping) -> Result<i32> {
    let request = BuildRequest::from_cli(&graph_args.build)?;
    let input = frontend_input::load(&request)?;
    let (_runtime, sources) =
        Sources::open(&root, &request.insecure_registries, request.registry_ca.as_deref(), request.pull, &mapping)?;
    let started = std::time::Instant::now();
    let lowered =
        lower::parse_and_lower(&input.dockerfile, &input.lower, &sources).map_err(|d| anyhow::anyhow!("{d}"))?;
    if graph_args.timings {
        eprintln!("parse+lower: {:.3} ms", started.elapsed().as_secs_f64() * 1000.0);
    }
    println!("{}", serde_json::to_string_pretty(&graph_json(&lowered))?);
    Ok(0)
}

/// `{"vertices": [...], "output": ..., "config": ...}`.
pub fn graph_json(lowered: &lower::LoweredBuild) -> serde_json::Value {
    let vertices: Vec<serde_json::Value> = lowered
        .definition
        .vertices
        .iter()
        .map(|v| {
            serde_json::json!({
                "digest": v.digest.to_string(),
                "op": v.op.kind(),
                "inputs": v.inputs.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
                "description": v.meta.description,
                "stage": v.meta.stage,
                "ignore_cache": v.meta.ignore_cache,
                "spec": v.op,
            })
        })
        .collect();
    serde_json::json!({
        "vertices": vertices,
        "output": lowered.definition.output().map(|d| d.to_string()),
        "target": lowered.target,
        "platform": lowered.platform.to_string(),
        "config": lowered.config,
    })
}
