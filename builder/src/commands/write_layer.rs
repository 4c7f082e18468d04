//! `rbuild debug write-layer`.

use std::time::Instant;

use anyhow::{Result, bail};
use rbuild_cache::layer::{self, Compression, LayerOptions};

use crate::cli::WriteLayerArgs;
use crate::export::threads;

/// `rbuild debug write-layer`: packs a directory as a layer and prints its
/// descriptor and throughput (for `bench/compression.sh`).
pub fn write_layer_command(args: &WriteLayerArgs) -> Result<i32> {
    let compression = match args.compression.as_str() {
        "gzip" => Compression::Gzip { level: args.level.unwrap_or(6).clamp(0, 9) as u32 },
        "zstd" => Compression::Zstd { level: args.level.unwrap_or(3) },
        "uncompressed" => Compression::Uncompressed,
        other => bail!("unknown compression `{other}`"),
    };
    let opts = LayerOptions { compression, source_date_epoch: None, threads: args.threads.unwrap_or_else(threads) };
    let started = Instant::now();
    if args.compress_only {
        let mut input = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&args.dir)?);
        let size = match &args.output {
            Some(path) => {
                let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
                layer::compress_stream(&mut input, compression, opts.threads, &mut f)?
            }
            None => layer::compress_stream(&mut input, compression, opts.threads, &mut std::io::sink())?,
        };
        let elapsed = started.elapsed().as_secs_f64();
        println!("{}", serde_json::json!({ "size": size, "threads": opts.threads, "seconds": elapsed }));
        return Ok(0);
    }
    let info = match &args.output {
        Some(path) => {
            let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
            layer::write_layer(&args.dir, &opts, &mut f)?
        }
        None => layer::write_layer(&args.dir, &opts, &mut std::io::sink())?,
    };
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "digest": info.digest, "diff_id": info.diff_id, "size": info.size, "media_type": info.media_type,
            "threads": opts.threads, "seconds": elapsed,
        })
    );
    Ok(0)
}
