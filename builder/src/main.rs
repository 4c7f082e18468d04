//! `rbuild`: a daemonless, rootless container image builder.

mod export;
mod registry;

fn main() {
    println!("rbuild");
}
