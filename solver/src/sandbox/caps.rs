//! Capabilities of a `RUN` process: Docker's default set, as runc applies it.
//!
//! Pid 1 starts as root of the process-wide user namespace with every
//! capability. What the command gets ([`Plan`]):
//! - `--security=sandbox` (the default): the bounding set is Docker's 14
//!   default capabilities ([`DOCKER_DEFAULT`], moby `oci/caps/defaults.go`),
//!   less `CAP_NET_RAW` on the build's private network ([`configured`]);
//!   root holds them permitted and effective, a non-root `USER` holds none
//!   (Docker leaves its permitted and effective sets empty; a setuid binary
//!   can still gain the bounding set, as under Docker);
//! - `--security=insecure`: nothing is dropped from the bounding set; root
//!   keeps everything (BuildKit's `--security=insecure`).
//!
//! Inheritable and ambient sets are always empty (moby stopped filling the
//! inheritable set, CVE-2022-24769).
//!
//! Kernel rules the order relies on: switching from uid 0 to another uid
//! empties the permitted and effective sets unless `PR_SET_KEEPCAPS` is set
//! ([`keep_across_setuid`]), and empties the effective set even then;
//! shrinking the bounding set needs `CAP_SETPCAP` in the effective set. So,
//! like runc: keep caps, switch ids, raise the effective set again
//! ([`regain_after_setuid`]), then [`Plan::apply`] drops the bounding set and
//! sets the final sets last.

use rustix::thread::{CapabilitySet, CapabilitySets};

use super::{Network, Security};

/// Docker's default capabilities (moby `oci/caps/defaults.go`): `0xa80425fb`.
pub(crate) const DOCKER_DEFAULT: CapabilitySet = CapabilitySet::CHOWN
    .union(CapabilitySet::DAC_OVERRIDE)
    .union(CapabilitySet::FSETID)
    .union(CapabilitySet::FOWNER)
    .union(CapabilitySet::MKNOD)
    .union(CapabilitySet::NET_RAW)
    .union(CapabilitySet::SETGID)
    .union(CapabilitySet::SETUID)
    .union(CapabilitySet::SETFCAP)
    .union(CapabilitySet::SETPCAP)
    .union(CapabilitySet::NET_BIND_SERVICE)
    .union(CapabilitySet::SYS_CHROOT)
    .union(CapabilitySet::KILL)
    .union(CapabilitySet::AUDIT_WRITE);

/// The default set of a `RUN` on the build's private network: Docker's
/// without `CAP_NET_RAW` (rootless podman's default set has none either).
///
/// Why: behind Docker's bridge a hand-made frame to 127.0.0.1 is a martian
/// that the host's kernel drops; behind a user-mode stack (pasta,
/// slirp4netns) it is read by a process that opens a host socket to the
/// address it finds, i.e. the host's loopback. `CAP_NET_RAW` is what lets a
/// `RUN` write such frames (`AF_PACKET`); without it the namespace's kernel
/// routes 127.0.0.0/8 to its own `lo` only. Filtering in the namespace
/// instead would not hold: `AF_PACKET` frames skip netfilter, and
/// `PACKET_QDISC_BYPASS` skips tc. `ping` keeps working through ICMP
/// datagram sockets, which `ping_group_range` opens to every group of the
/// namespace (`super::network`).
pub(crate) const PRIVATE_NETWORK_DEFAULT: CapabilitySet = DOCKER_DEFAULT.difference(CapabilitySet::NET_RAW);

/// The configured capabilities of a `--security=sandbox` `RUN` on
/// `network`: its bounding set (as far as pid 1 holds them) and the set the
/// seccomp profile is evaluated against (as moby does with a container's
/// configured set).
pub(crate) fn configured(network: &Network) -> CapabilitySet {
    match network {
        Network::Private { .. } => PRIVATE_NETWORK_DEFAULT,
        // The host's namespace: Docker's `--network=host` keeps the set,
        // and what a frame can reach there a plain socket reaches as well.
        // An empty namespace has no device to write frames to.
        Network::Host | Network::None => DOCKER_DEFAULT,
    }
}

/// [`configured`] as a set of the seccomp profile (same bit numbering):
/// the filter is built for the capabilities the `RUN` can actually hold.
pub(crate) fn configured_for_seccomp(network: &Network) -> super::seccomp::CapSet {
    super::seccomp::CapSet::from_bits(configured(network).bits())
}

/// The capability sets a `RUN` command starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Bounding set: all a process of the `RUN` can ever hold.
    pub bounding: CapabilitySet,
    /// Permitted and effective sets of the command.
    pub held: CapabilitySet,
}

impl Plan {
    /// The sets for `security` on `network` and the command's uid, given
    /// `all`, what pid 1 holds before dropping anything.
    pub(crate) fn new(security: Security, network: &Network, uid: u32, all: CapabilitySet) -> Plan {
        let bounding = match security {
            Security::Sandbox => configured(network) & all,
            Security::Insecure => all,
        };
        Plan { bounding, held: if uid == 0 { bounding } else { CapabilitySet::empty() } }
    }

    /// Applies the plan to the calling thread (after [`regain_after_setuid`]).
    pub(crate) fn apply(&self) -> std::io::Result<()> {
        for bit in 0..u64::BITS {
            let cap = CapabilitySet::from_bits_retain(1 << bit);
            if self.bounding.contains(cap) {
                continue;
            }
            match rustix::thread::capability_is_in_bounding_set(cap) {
                Ok(true) => rustix::thread::remove_capability_from_bounding_set(cap)?,
                Ok(false) => {}
                // Past the kernel's last capability.
                Err(rustix::io::Errno::INVAL) => break,
                Err(e) => return Err(e.into()),
            }
        }
        rustix::thread::clear_ambient_capability_set()?;
        rustix::thread::set_capabilities(
            None,
            CapabilitySets { effective: self.held, permitted: self.held, inheritable: CapabilitySet::empty() },
        )?;
        Ok(())
    }
}

/// What the calling thread holds now (its permitted set).
pub(crate) fn current() -> std::io::Result<CapabilitySet> {
    Ok(rustix::thread::capabilities(None)?.permitted)
}

/// Keeps the permitted set across the coming switch away from uid 0.
pub(crate) fn keep_across_setuid() -> std::io::Result<()> {
    Ok(rustix::thread::set_keep_capabilities(true)?)
}

/// After the id switch: makes the permitted set effective again (a switch
/// away from uid 0 empties the effective set even with `PR_SET_KEEPCAPS`)
/// and clears `PR_SET_KEEPCAPS`, so that what follows (the seccomp filter,
/// [`Plan::apply`]) runs with every capability of the namespace.
pub(crate) fn regain_after_setuid() -> std::io::Result<()> {
    let cur = rustix::thread::capabilities(None)?;
    rustix::thread::set_capabilities(
        None,
        CapabilitySets { effective: cur.permitted, permitted: cur.permitted, inheritable: CapabilitySet::empty() },
    )?;
    Ok(rustix::thread::set_keep_capabilities(false)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every capability of a 6.x kernel (0..=40).
    const ALL: CapabilitySet = CapabilitySet::from_bits_retain((1 << 41) - 1);

    #[test]
    fn docker_default_is_moby_mask() {
        // `docker run --rm busybox grep CapBnd /proc/self/status`.
        assert_eq!(DOCKER_DEFAULT.bits(), 0xa804_25fb);
        assert_eq!(DOCKER_DEFAULT.bits().count_ones(), 14);
    }

    fn private() -> Network {
        Network::Private { netns: "/x/netns".into() }
    }

    #[test]
    fn root_holds_the_default_set_and_users_none() {
        for net in [Network::Host, Network::None] {
            let root = Plan::new(Security::Sandbox, &net, 0, ALL);
            assert_eq!((root.bounding, root.held), (DOCKER_DEFAULT, DOCKER_DEFAULT), "{net:?}");
            let user = Plan::new(Security::Sandbox, &net, 1000, ALL);
            assert_eq!((user.bounding, user.held), (DOCKER_DEFAULT, CapabilitySet::empty()), "{net:?}");
        }
    }

    #[test]
    fn private_network_drops_net_raw_only() {
        assert_eq!(PRIVATE_NETWORK_DEFAULT.bits(), 0xa804_05fb);
        assert_eq!(DOCKER_DEFAULT.difference(PRIVATE_NETWORK_DEFAULT), CapabilitySet::NET_RAW);
        let root = Plan::new(Security::Sandbox, &private(), 0, ALL);
        assert_eq!((root.bounding, root.held), (PRIVATE_NETWORK_DEFAULT, PRIVATE_NETWORK_DEFAULT));
        let user = Plan::new(Security::Sandbox, &private(), 1000, ALL);
        assert_eq!((user.bounding, user.held), (PRIVATE_NETWORK_DEFAULT, CapabilitySet::empty()));
    }

    #[test]
    fn insecure_keeps_everything_for_root() {
        for net in [Network::Host, Network::None, private()] {
            let root = Plan::new(Security::Insecure, &net, 0, ALL);
            assert_eq!((root.bounding, root.held), (ALL, ALL));
            let user = Plan::new(Security::Insecure, &net, 1000, ALL);
            assert_eq!((user.bounding, user.held), (ALL, CapabilitySet::empty()));
        }
    }

    #[test]
    fn nothing_is_added_that_pid1_does_not_hold() {
        let some = CapabilitySet::CHOWN | CapabilitySet::SYS_ADMIN;
        assert_eq!(Plan::new(Security::Sandbox, &Network::None, 0, some).held, CapabilitySet::CHOWN);
    }
}
