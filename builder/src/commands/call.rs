//! `rbuild build --call outline|targets|check`, as buildx prints them.

use anyhow::{Result, bail};
use rbuild_frontend::outline;

use crate::frontend_input::FrontendInput;

pub fn run(call: &str, input: &FrontendInput) -> Result<i32> {
    let dockerfile = rbuild_frontend::instructions::parse_dockerfile(&input.dockerfile, &input.dockerfile_name)
        .map_err(|d| anyhow::anyhow!("{d}"))?;
    match call {
        "targets" => {
            print!("{}", outline::targets(&dockerfile));
            Ok(0)
        }
        "outline" => {
            let text = outline::outline(&dockerfile, &input.lower)
                .map_err(|d| anyhow::anyhow!("{}", d.with_source(&input.dockerfile_name, &input.dockerfile)))?;
            print!("{text}");
            Ok(0)
        }
        "check" => {
            let report = outline::check(&dockerfile, &input.dockerfile, &input.lower);
            print!("{}", report.render(&input.dockerfile_name, &input.dockerfile));
            Ok(if report.failed() { 1 } else { 0 })
        }
        other => bail!("unknown `--call {other}`: use build, check, outline or targets"),
    }
}
