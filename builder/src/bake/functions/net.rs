//! CIDR helpers for `cidrhost`, `cidrnetmask`, `cidrsubnet(s)`.

use super::e;
use crate::bake::eval::EvalError;

/// A network `(address, bit width)` and its prefix length.
pub(super) fn cidr(x: &str) -> Result<((u128, u32), u32), EvalError> {
    let (addr, bits) = x.split_once('/').ok_or_else(|| e(format!("invalid CIDR expression {x:?}")))?;
    let bits: u32 = bits.parse().map_err(|_| e(format!("invalid CIDR expression {x:?}")))?;
    let ip: std::net::IpAddr = addr.parse().map_err(|_| e(format!("invalid CIDR expression {x:?}")))?;
    let (v, width) = match ip {
        std::net::IpAddr::V4(a) => (u32::from(a) as u128, 32),
        std::net::IpAddr::V6(a) => (u128::from(a), 128),
    };
    if bits > width {
        return Err(e(format!("invalid CIDR expression {x:?}")));
    }
    let mask = if bits == 0 { 0 } else { (u128::MAX << (128 - bits)) >> (128 - width) };
    Ok(((v & mask, width), bits))
}

pub(super) fn ip_string(v: u128, width: u32) -> String {
    if width == 32 { std::net::Ipv4Addr::from(v as u32).to_string() } else { std::net::Ipv6Addr::from(v).to_string() }
}
