//! `rbuild push NAME [DEST]`: a stored image to a registry.

use std::path::Path;

use anyhow::{Context as _, Result};
use rbuild_cache::store::Store;

use crate::cli::{PushArgs, RegistryArgs};
use crate::export::push_stored;
use crate::progress::{Mode, Printer};
use crate::registry::{ImageRef, RegistryClient, RegistryOptions};

/// A registry client for the connection flags.
pub fn registry_client(args: &RegistryArgs) -> Result<RegistryClient> {
    Ok(RegistryClient::new(crate::config::current().registry_options(RegistryOptions {
        insecure_registries: args.insecure_registry.clone(),
        ca_file: args.registry_ca.clone(),
        ..RegistryOptions::default()
    }))?)
}

pub fn run(args: &PushArgs, root: &Path) -> Result<i32> {
    let store = Store::open(root).with_context(|| format!("opening store `{}`", root.display()))?;
    let mode = Mode::parse(&args.progress, false)?;
    let printer = Printer::new(mode);
    let local = ImageRef::parse(&args.name)?;
    let target = match &args.destination {
        Some(d) => ImageRef::parse(d)?,
        None => local.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the I/O runtime")?;
    let registry = registry_client(&args.registry)?;
    // Tags are stored under the name as given to `-t`; try that first,
    // then the normalised form.
    let name = if store.tag(&args.name)?.is_some() { args.name.clone() } else { local.to_string() };
    let digest = push_stored(&registry, runtime.handle(), &store, &target, &name, !args.oci_mediatypes, &printer)?;
    if mode == Mode::Quiet {
        println!("{digest}");
    }
    Ok(0)
}
