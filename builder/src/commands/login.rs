//! `rbuild login` / `rbuild logout`.

use std::io::{BufRead as _, IsTerminal as _};

use anyhow::{Context as _, Result, bail};

use super::push::registry_client;
use crate::cli::{LoginArgs, LogoutArgs};
use crate::registry::auth::default_docker_config_dir;
use crate::registry::credstore::{self, CredStoreError, Stored};

const DEFAULT_SERVER: &str = "docker.io";

pub fn login(args: &LoginArgs) -> Result<i32> {
    let registry = credstore::normalise_registry(args.server.as_deref().unwrap_or(DEFAULT_SERVER))?;
    let Some(user) = args.username.clone().filter(|u| !u.is_empty()) else {
        bail!("`rbuild login` needs `-u USER` and the password on stdin with `--password-stdin`");
    };
    if !args.password_stdin {
        bail!(
            "give the password on stdin with `--password-stdin` (e.g. `echo \"$TOKEN\" | rbuild login -u USER --password-stdin {registry}`)"
        );
    }
    if std::io::stdin().is_terminal() {
        eprintln!("reading the password from stdin (end with Enter)");
    }
    let mut password = String::new();
    std::io::stdin().lock().read_line(&mut password).context("reading the password from stdin")?;
    // docker strips the trailing newline (and only that) of --password-stdin.
    let password = password.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        bail!("the password on stdin is empty");
    }
    let client = registry_client(&args.registry)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(client.verify_login(&registry, &user, &password))?;
    let dir = default_docker_config_dir().ok_or(CredStoreError::NoConfigDir)?;
    match credstore::store(&dir, &registry, &user, &password)? {
        Stored::ConfigFile(path) => eprintln!("credentials for {registry} saved in {}", path.display()),
        Stored::Helper(h) => eprintln!("credentials for {registry} saved with docker-credential-{h}"),
    }
    println!("Login Succeeded");
    Ok(0)
}

pub fn logout(args: &LogoutArgs) -> Result<i32> {
    let registry = credstore::normalise_registry(args.server.as_deref().unwrap_or(DEFAULT_SERVER))?;
    let dir = default_docker_config_dir().ok_or(CredStoreError::NoConfigDir)?;
    if credstore::erase(&dir, &registry)? {
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(0)
}
