//! `rbuild images`, `rbuild prune`, `rbuild du`.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use rbuild_cache::oci::ImageConfig;
use rbuild_cache::store::{PruneOptions, Store};

use crate::cli::PruneArgs;

fn open(root: &Path) -> Result<Store> {
    Store::open(root).with_context(|| format!("opening store `{}`", root.display()))
}

/// Human-readable size (`1.5MB`), decimal units as docker prints them.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes}B");
    }
    // Up to three decimals, trailing zeros dropped: 1.5MB, 2MB, 1.234GB.
    let number = format!("{v:.3}");
    let number = number.trim_end_matches('0').trim_end_matches('.');
    format!("{number}{}", UNITS[unit])
}

/// Parses `10GB`, `512MB`, `1.5GiB`, `1000`.
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().with_context(|| format!("invalid size `{s}`"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024f64.powi(4),
        other => bail!("invalid size unit `{other}` in `{s}`"),
    };
    Ok((n * mult) as u64)
}

pub fn images(root: &Path) -> Result<i32> {
    let store = open(root)?;
    println!("{:<50} {:<20} {:<14} SIZE", "REPOSITORY", "TAG", "IMAGE ID");
    for (name, digest) in store.tags()? {
        let (repo, tag) = match name.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
            _ => (name.clone(), "<none>".to_string()),
        };
        let (id, size) = match stored_image(&store, &digest) {
            Ok((manifest, _)) => {
                let id = manifest["config"]["digest"]
                    .as_str()
                    .unwrap_or("")
                    .trim_start_matches("sha256:")
                    .chars()
                    .take(12)
                    .collect::<String>();
                let size: u64 = manifest["layers"]
                    .as_array()
                    .map(|l| l.iter().filter_map(|d| d["size"].as_u64()).sum())
                    .unwrap_or(0);
                (id, human_size(size))
            }
            // An index (several platforms): show its digest.
            Err(_) => (digest.trim_start_matches("sha256:").chars().take(12).collect(), "-".into()),
        };
        println!("{repo:<50} {tag:<20} {id:<14} {size}");
    }
    Ok(0)
}

pub fn prune(root: &Path, args: &PruneArgs) -> Result<i32> {
    let store = open(root)?;
    if args.cache_mounts {
        if args.all || args.keep_storage.is_some() {
            bail!("`--cache-mounts` prunes only cache mounts: it does not combine with `--all` or `--keep-storage`");
        }
        let ids = mount_filter(&args.filter)?;
        let report = store.prune_cache_mounts(ids.as_deref())?;
        println!(
            "Total reclaimed space: {} ({} cache mounts; {} held by running builds kept)",
            human_size(report.bytes_freed),
            report.mounts_removed,
            report.mounts_held
        );
        return Ok(0);
    }
    if !args.filter.is_empty() {
        bail!("`--filter` applies to `--cache-mounts` only");
    }
    let keep_storage = args.keep_storage.as_deref().map(parse_size).transpose()?;
    let report = store.prune(&PruneOptions { all: args.all, keep_storage, keep_duration: None })?;
    println!(
        "Total reclaimed space: {} ({} blobs, {} snapshots, {} cache records, {} cache mounts)",
        human_size(report.bytes_freed),
        report.blobs_removed,
        report.snapshots_removed,
        report.records_removed,
        report.mounts_removed
    );
    Ok(0)
}

pub fn du(root: &Path) -> Result<i32> {
    let store = open(root)?;
    let usage = store.disk_usage()?;
    println!("{:<16} {:>8} {:>12}", "TYPE", "COUNT", "SIZE");
    println!("{:<16} {:>8} {:>12}", "blobs", usage.blobs_count, human_size(usage.blobs_bytes));
    println!("{:<16} {:>8} {:>12}", "snapshots", usage.snapshots_count, human_size(usage.snapshots_bytes));
    println!("{:<16} {:>8} {:>12}", "cache mounts", usage.mounts_count, human_size(usage.mounts_bytes));
    println!("{:<16} {:>8}", "cache records", usage.records_count);
    // Their bytes are the snapshots': listed so a small `blobs` line is
    // not mistaken for a store that holds no layers.
    println!("{:<16} {:>8} {:>12}", "deferred layers", usage.deferred_layers, "(in snapshots)");
    println!(
        "{:<16} {:>8} {:>12}",
        "total",
        "",
        human_size(usage.blobs_bytes + usage.snapshots_bytes + usage.mounts_bytes)
    );
    let mounts = store.cache_mounts()?;
    if !mounts.is_empty() {
        println!();
        println!("{:<40} {:>12} {:>8}", "CACHE MOUNT", "SIZE", "IN USE");
        for m in mounts {
            // The id comes from a Dockerfile: no control characters reach the terminal.
            let id: String = m.id.chars().map(|c| if c.is_control() { '?' } else { c }).collect();
            println!("{id:<40} {:>12} {:>8}", human_size(m.bytes), if m.held { "yes" } else { "" });
        }
    }
    Ok(0)
}

/// The ids of `--filter id=ID` (`None`: no filter, every mount).
fn mount_filter(filters: &[String]) -> Result<Option<Vec<String>>> {
    if filters.is_empty() {
        return Ok(None);
    }
    let mut ids = Vec::new();
    for f in filters {
        match f.split_once('=') {
            Some(("id", id)) if !id.is_empty() => ids.push(id.to_string()),
            _ => bail!("invalid `--filter {f}`: expected `id=ID`"),
        }
    }
    Ok(Some(ids))
}

/// Reads a stored image's manifest and config by manifest digest.
fn stored_image(store: &Store, manifest_digest: &str) -> Result<(serde_json::Value, ImageConfig)> {
    let manifest: serde_json::Value = serde_json::from_slice(&store.read_blob(manifest_digest)?)?;
    let config_digest = manifest["config"]["digest"].as_str().context("manifest without config")?;
    let config: ImageConfig = serde_json::from_slice(&store.read_blob(config_digest)?)?;
    Ok((manifest, config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_trip() {
        assert_eq!(parse_size("10GB").unwrap(), 10_000_000_000);
        assert_eq!(parse_size("1.5MiB").unwrap(), 1_572_864);
        assert!(parse_size("12 parsecs").is_err());
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_500_000), "1.5MB");
    }
}
