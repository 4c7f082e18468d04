use anyhow::{Result, bail};
use crate::frontend_input::FrontendInput;
pub fn run(call: &str, _input: &FrontendInput) -> Result<i32> { bail!("--call {call} pending") }
