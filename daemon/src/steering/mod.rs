//! # Layout
//! The only module that touches aya. It loads the XDP program built by
//! `daemon/build.rs` from `ebpf/xdp` (embedded in the binary), attaches it to
//! the service interface and flips its role map when leadership changes.
//!
//! - [`Steering`]: owns the loaded object, the attachment and the typed maps.
//!   Dropping it detaches the program.
//! - [`Role`]: what the program does with service traffic.
//! - [`Settings`]: what the loader writes into `CONFIG` once: the HTTP port
//!   followers drop, and the leader's token-bucket limits
//!   ([`crate::config::PacketLimits`], from node.toml `[limits]`).
//! - [`SteeringError`]: everything that can fail here.
//!
//! Kernel/user shared constants and map layouts live in `tandem-ebpf-common`
//! (`ebpf/common`). The integration test (`tests.rs`) builds its own pair of
//! network namespaces and needs root.

use std::net::Ipv4Addr;

use aya::maps::{Array, MapData, MapError, PerCpuArray};
use aya::programs::{ProgramError, Xdp, XdpMode};
use aya::{Ebpf, EbpfError};
use tandem_ebpf_common::{
    counter_index, Config, Limit, Proto, RateClass, Verdict, MAP_CONFIG, MAP_COUNTERS, MAP_ROLE,
    PROGRAM_NAME, RATE_CLASSES, ROLE_DROP, ROLE_LEADER,
};

use crate::config::{PacketLimit, PacketLimits};

#[cfg(test)]
mod tests;

/// The XDP object, built by `build.rs`. Empty when the build ran with
/// `AYA_BUILD_SKIP=1`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tandem-xdp"));

/// Log target of this module: attach, detach and role flips are rare and
/// matter when reading a failover, so they are not mixed with packet logs.
const LOG_TARGET: &str = "tandem::steering";

/// What the XDP program does with service traffic on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Pass everything: this node answers DHCP, TFTP and ARP for the VIP.
    Leader,
    /// Drop DHCP (UDP 67), TFTP (UDP 69), ARP requests for the VIP and TCP
    /// to the VIP's HTTP port; pass everything else (Raft, API, ssh).
    Follower,
}

impl Role {
    fn map_value(self) -> u32 {
        match self {
            Role::Leader => ROLE_LEADER,
            Role::Follower => ROLE_DROP,
        }
    }
}

/// What the program is told once, at attach, besides the VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// TCP port of the HTTP boot server on the VIP; followers drop it. 0: none.
    pub http_port: u16,
    /// The leader's per-sender limits.
    pub limits: PacketLimits,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            http_port: 80,
            limits: PacketLimits::default(),
        }
    }
}

impl Settings {
    fn config(&self, vip: Ipv4Addr) -> Config {
        let limit = |l: PacketLimit| Limit::new(l.rate, l.burst);
        let mut limits = [Limit::OFF; RATE_CLASSES as usize];
        let l = &self.limits;
        limits[RateClass::DhcpMac as usize] = limit(l.dhcp_per_mac);
        limits[RateClass::DhcpRelay as usize] = limit(l.dhcp_per_relay);
        limits[RateClass::TftpRrq as usize] = limit(l.tftp_per_client);
        limits[RateClass::ArpVip as usize] = limit(l.arp_per_mac);
        Config {
            vip_be: u32::from_ne_bytes(vip.octets()),
            http_port: self.http_port,
            _pad: 0,
            limits,
        }
    }
}

/// How the program ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native XDP, run by the driver before an skb exists.
    Driver,
    /// Generic XDP, run by the kernel on the skb; works on any interface.
    Skb,
}

impl AttachMode {
    fn xdp_mode(self) -> XdpMode {
        match self {
            AttachMode::Driver => XdpMode::Driver,
            AttachMode::Skb => XdpMode::Skb,
        }
    }
}

/// Errors of the steering subsystem.
#[derive(Debug, thiserror::Error)]
pub enum SteeringError {
    #[error("this binary was built with AYA_BUILD_SKIP set, so it has no XDP program; rebuild without it")]
    NotBuilt,
    #[error("loading the XDP object into the kernel")]
    Load(#[source] EbpfError),
    #[error("the XDP object has no {0}; it does not match this daemon")]
    Missing(&'static str),
    #[error("XDP program `{PROGRAM_NAME}`: {what}")]
    Program {
        what: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("attaching XDP to interface {iface} failed (last mode tried: {mode:?})")]
    Attach {
        iface: String,
        mode: AttachMode,
        #[source]
        source: ProgramError,
    },
    #[error("XDP map {map}: {what}")]
    Map {
        map: &'static str,
        what: &'static str,
        #[source]
        source: MapError,
    },
}

/// The loaded and attached XDP program.
///
/// Invariant: while a `Steering` exists the program is attached to `iface`,
/// `CONFIG` holds the VIP and `ROLE` holds `role`. The program starts as
/// [`Role::Follower`] (drop): a node only serves once told it leads.
pub struct Steering {
    /// Owns the program and, through it, the link. Dropping it would detach
    /// too; `Drop` detaches first so the log line is accurate.
    ebpf: Ebpf,
    /// `Some` until `Drop` takes it to detach.
    link: Option<aya::programs::xdp::XdpLinkId>,
    role_map: Array<MapData, u32>,
    counters: PerCpuArray<MapData, u64>,
    role: Role,
    iface: String,
    mode: AttachMode,
}

impl Steering {
    /// Loads the embedded program and attaches it to `iface` (try driver mode,
    /// fall back to SKB mode; log which), sets VIP, role = Follower (drop)
    /// until told otherwise.
    ///
    /// Must be called from a thread in the network namespace that holds
    /// `iface`; after that the value may move anywhere.
    pub fn attach(
        iface: &str,
        vip: Ipv4Addr,
        settings: &Settings,
    ) -> Result<Steering, SteeringError> {
        Self::attach_modes(iface, vip, settings, &[AttachMode::Driver, AttachMode::Skb])
    }

    /// [`Steering::attach`] trying only `modes`, in order.
    fn attach_modes(
        iface: &str,
        vip: Ipv4Addr,
        settings: &Settings,
        modes: &[AttachMode],
    ) -> Result<Steering, SteeringError> {
        if OBJECT.is_empty() {
            return Err(SteeringError::NotBuilt);
        }
        let mut ebpf = Ebpf::load(OBJECT).map_err(SteeringError::Load)?;

        // Configure before attaching, so the first packet already sees the
        // VIP and the drop role. CONFIG is written once: its handle closes at
        // the end of this function and the loaded program keeps the map alive.
        let mut config: Array<MapData, Config> = take_map(&mut ebpf, MAP_CONFIG)?;
        config
            .set(0, settings.config(vip), 0)
            .map_err(|source| SteeringError::Map {
                map: MAP_CONFIG,
                what: "writing the VIP and limits",
                source,
            })?;
        let mut role_map: Array<MapData, u32> = take_map(&mut ebpf, MAP_ROLE)?;
        write_role(&mut role_map, Role::Follower)?;
        let counters: PerCpuArray<MapData, u64> = take_map(&mut ebpf, MAP_COUNTERS)?;

        let program = program_mut(&mut ebpf)?;
        program.load().map_err(|source| SteeringError::Program {
            what: "loading it into the kernel (verifier)",
            source,
        })?;

        let (link, mode) = attach_first(program, iface, modes)?;
        tracing::info!(target: LOG_TARGET, iface, ?mode, %vip, "XDP steering attached, role follower (drop)");

        Ok(Steering {
            ebpf,
            link: Some(link),
            role_map,
            counters,
            role: Role::Follower,
            iface: iface.to_owned(),
            mode,
        })
    }

    /// Flips the role map. Takes effect for the next packet on every CPU.
    pub fn set_role(&mut self, role: Role) -> Result<(), SteeringError> {
        write_role(&mut self.role_map, role)?;
        if role != self.role {
            tracing::info!(target: LOG_TARGET, iface = %self.iface, ?role, "XDP role set");
        }
        self.role = role;
        Ok(())
    }

    /// The role last written to the map.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    /// How the program is attached.
    #[must_use]
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// Sum of per-CPU counters: (proto, verdict, packets), one entry per pair
    /// in a fixed order, zeros included.
    pub fn counters(&self) -> Result<Vec<(&'static str, &'static str, u64)>, SteeringError> {
        let mut out = Vec::with_capacity(Proto::ALL.len() * Verdict::ALL.len());
        for proto in Proto::ALL {
            for verdict in Verdict::ALL {
                let per_cpu = self
                    .counters
                    .get(&counter_index(proto, verdict), 0)
                    .map_err(|source| SteeringError::Map {
                        map: MAP_COUNTERS,
                        what: "reading a counter",
                        source,
                    })?;
                // Each CPU's slot only grows; wrapping is a u64 of packets away.
                let total = per_cpu.iter().fold(0u64, |acc, n| acc.wrapping_add(*n));
                out.push((proto.name(), verdict.name(), total));
            }
        }
        Ok(out)
    }

    /// Writes [`Steering::counters`] into `tandem_xdp_packets_total{proto,verdict}`
    /// as absolute values (the map is the source of truth; the counter mirrors it with `Counter::absolute`).
    pub fn export_counters(&self) -> Result<(), SteeringError> {
        let family = &crate::metrics::get().xdp_packets;
        for (proto, verdict, packets) in self.counters()? {
            let label = crate::metrics::ProtoVerdict {
                proto: proto.to_owned(),
                verdict: verdict.to_owned(),
            };
            family
                .get_or_create(&label)
                .set(i64::try_from(packets).unwrap_or(i64::MAX));
        }
        Ok(())
    }
}

impl Drop for Steering {
    fn drop(&mut self) {
        let Some(link) = self.link.take() else { return };
        let result = program_mut(&mut self.ebpf).and_then(|p| {
            p.detach(link).map_err(|source| SteeringError::Program {
                what: "detaching",
                source,
            })
        });
        match result {
            Ok(()) => {
                tracing::info!(target: LOG_TARGET, iface = %self.iface, "XDP steering detached");
            }
            // The program still goes away when `ebpf` drops right after this.
            Err(e) => {
                tracing::warn!(target: LOG_TARGET, iface = %self.iface, error = %e, "XDP detach failed");
            }
        }
    }
}

/// Attaches in the first of `modes` that works (`modes` is never empty).
fn attach_first(
    program: &mut Xdp,
    iface: &str,
    modes: &[AttachMode],
) -> Result<(aya::programs::xdp::XdpLinkId, AttachMode), SteeringError> {
    let (&last, earlier) = modes.split_last().expect("at least one attach mode");
    for &mode in earlier {
        match program.attach(iface, mode.xdp_mode()) {
            Ok(link) => return Ok((link, mode)),
            Err(e) => {
                tracing::info!(target: LOG_TARGET, iface, ?mode, error = %e, "XDP attach mode unavailable, trying the next");
            }
        }
    }
    match program.attach(iface, last.xdp_mode()) {
        Ok(link) => Ok((link, last)),
        Err(source) => Err(SteeringError::Attach {
            iface: iface.to_owned(),
            mode: last,
            source,
        }),
    }
}

fn write_role(map: &mut Array<MapData, u32>, role: Role) -> Result<(), SteeringError> {
    map.set(0, role.map_value(), 0)
        .map_err(|source| SteeringError::Map {
            map: MAP_ROLE,
            what: "writing the role",
            source,
        })
}

fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp, SteeringError> {
    let program = ebpf
        .program_mut(PROGRAM_NAME)
        .ok_or(SteeringError::Missing("XDP program"))?;
    program.try_into().map_err(|source| SteeringError::Program {
        what: "is not an XDP program",
        source,
    })
}

fn take_map<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, SteeringError>
where
    M: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(SteeringError::Missing(name))?;
    M::try_from(map).map_err(|source| SteeringError::Map {
        map: name,
        what: "has an unexpected type",
        source,
    })
}
