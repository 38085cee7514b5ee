use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::Deserialize;

use super::error::{field_err, ConfigError};

/// The file as written (`/etc/tandem/node.toml`). Unknown fields are refused
/// so that a typo does not silently fall back to a default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    node_id: Option<u64>,
    data_dir: Option<PathBuf>,
    /// Where TFTP and HTTP boot serve files from; defaults to `<data_dir>/artifacts`.
    artifact_dir: Option<PathBuf>,
    /// Uploads larger than this are refused (default 8 GiB: a DVD ISO fits).
    artifact_max_bytes: Option<u64>,
    /// How often held blobs are hashed again, in seconds (default 3600).
    artifact_verify_secs: Option<u64>,
    cluster: Option<WireCluster>,
    api: Option<WireApi>,
    service: Option<WireService>,
    /// The leader's per-sender packet limits (XDP); defaults if left out.
    limits: Option<super::limits::WireLimits>,
    log: Option<WireLog>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireLog {
    /// `"text"` (default) or `"json"`: one JSON object per line, for log
    /// shippers and `tandem logs --merge`. `tandem daemon --log-format` wins.
    format: Option<String>,
}

/// How the daemon writes its log lines (DESIGN.md section 6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `TIME LEVEL target: message node_id=.. term=.. index=.. key=value..`
    #[default]
    Text,
    /// One JSON object per line with the same fields.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?} is not a log format (text or json)")),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireApi {
    /// The management address. Inside the service LAN it works, with a
    /// loud warning in the log and `tandem status` (the bearer token guards
    /// it either way): a small site may have no other network.
    listen: Option<String>,
    /// `GET` paths that need no admin token (default: health, status,
    /// metrics); `[]` protects everything.
    open: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireListen {
    listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireCluster {
    listen: Option<String>,
    /// Multiplies every Raft timer (heartbeat, election, leader lease) and
    /// the failure detector's timeouts: 1 (default) is tuned for a LAN of
    /// real machines. Slow hosts or links (emulated VMs, a WAN) need more;
    /// failover then takes that many times longer. Every node of a cluster
    /// should use the same value.
    timing_scale: Option<u64>,
}

/// The largest `cluster.timing_scale`: 100 times the LAN timers is a 22 s
/// silent failover, beyond what any boot network can wait.
const TIMING_SCALE_MAX: u64 = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireService {
    interface: Option<String>,
    vip: Option<String>,
    /// Ports are configurable for labs that cannot use the well-known ones.
    dhcp_port: Option<u16>,
    tftp_port: Option<u16>,
    /// The HTTP boot server's TCP port on the VIP (default 80); followers'
    /// XDP drops TCP to it.
    http_port: Option<u16>,
    /// Attach the XDP steering program (default true). Off only for hosts
    /// whose kernel cannot load it; followers then rely on the leader lease alone.
    xdp: Option<bool>,
}

/// The service side of the node: where the VIP lives.
#[derive(Clone, Debug)]
pub struct ServiceIface {
    pub interface: String,
    /// The floating address, with its prefix length, e.g. `10.0.0.10/24`.
    pub vip: Ipv4Net,
    pub dhcp_port: u16,
    pub tftp_port: u16,
    pub http_port: u16,
    pub xdp: bool,
}

/// A validated node config.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub artifact_dir: PathBuf,
    pub artifact_max_bytes: u64,
    pub artifact_verify_every: std::time::Duration,
    pub raft_listen: SocketAddr,
    /// `cluster.timing_scale`: the Raft timers' multiplier (1 on a LAN).
    pub timing_scale: u64,
    pub api_listen: SocketAddr,
    /// `GET` paths of the API open without the admin token (`api.open`).
    pub api_open: Vec<String>,
    pub service: ServiceIface,
    pub limits: super::limits::PacketLimits,
    /// `[log] format`; `tandem daemon --log-format` overrides it.
    pub log_format: LogFormat,
}

/// The API's open reads unless `api.open` says otherwise.
pub const DEFAULT_OPEN_ROUTES: [&str; 3] = ["/v1/health", "/v1/status", "/metrics"];

impl NodeConfig {
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        let w: Wire = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: "node.toml".into(),
            message: e.to_string(),
        })?;
        w.validate()
    }
}

fn listen(field: &str, v: Option<WireListen>) -> Result<SocketAddr, ConfigError> {
    let s = v.and_then(|l| l.listen).ok_or_else(|| {
        field_err(
            field,
            "missing",
            format!("set `{field} = \"10.0.0.11:PORT\"`"),
        )
    })?;
    let a: SocketAddr = s.parse().map_err(|_| {
        field_err(
            field,
            format!("{s:?} is not an address:port"),
            "write it as \"10.0.0.11:7480\"",
        )
    })?;
    if a.ip().is_unspecified() {
        return Err(field_err(
            field,
            "0.0.0.0 cannot be advertised to peers",
            "use this node's own address on the cluster network",
        ));
    }
    Ok(a)
}

/// `node_id`: present and not 0.
fn node_id(v: Option<u64>) -> Result<u64, ConfigError> {
    let node_id = v.ok_or_else(|| {
        field_err(
            "node_id",
            "missing",
            "set `node_id = 1` (unique per node, >= 1)",
        )
    })?;
    if node_id == 0 {
        return Err(field_err(
            "node_id",
            "0 is reserved",
            "use a number >= 1, unique in the cluster",
        ));
    }
    Ok(node_id)
}

/// `[api]`: the listen address and the open routes.
fn api_section(api: Option<WireApi>) -> Result<(SocketAddr, Vec<String>), ConfigError> {
    let (api_wire, api_open) = match api {
        Some(a) => (Some(WireListen { listen: a.listen }), a.open),
        None => (None, None),
    };
    let api_listen = listen("api.listen", api_wire)?;
    let api_open = api_open.unwrap_or_else(|| DEFAULT_OPEN_ROUTES.map(String::from).to_vec());
    if let Some(p) = api_open.iter().find(|p| !p.starts_with('/')) {
        return Err(field_err(
            "api.open",
            format!("{p:?} is not a path"),
            "list paths such as \"/metrics\"",
        ));
    }
    Ok((api_listen, api_open))
}

impl Wire {
    fn artifact_limits(&self) -> Result<(u64, std::time::Duration), ConfigError> {
        let max = self.artifact_max_bytes.unwrap_or(8 << 30);
        if max == 0 {
            return Err(field_err(
                "artifact_max_bytes",
                "0 refuses every upload",
                "leave it out (8 GiB) or give a size in bytes",
            ));
        }
        let verify_secs = self.artifact_verify_secs.unwrap_or(3600);
        if verify_secs == 0 {
            return Err(field_err(
                "artifact_verify_secs",
                "0 would re-hash every blob continuously",
                "leave it out (3600) or give seconds >= 1",
            ));
        }
        Ok((max, std::time::Duration::from_secs(verify_secs)))
    }

    // One check per field, in the file's order; splitting it scatters them.
    #[allow(clippy::too_many_lines)]
    fn validate(self) -> Result<NodeConfig, ConfigError> {
        let (artifact_max_bytes, artifact_verify_every) = self.artifact_limits()?;
        let node_id = node_id(self.node_id)?;
        let data_dir = self
            .data_dir
            .unwrap_or_else(|| PathBuf::from("/var/lib/tandem"));
        if !data_dir.is_absolute() {
            return Err(field_err(
                "data_dir",
                "must be an absolute path",
                "e.g. data_dir = \"/var/lib/tandem\"",
            ));
        }
        let artifact_dir = self
            .artifact_dir
            .unwrap_or_else(|| data_dir.join("artifacts"));
        let timing_scale = self
            .cluster
            .as_ref()
            .and_then(|c| c.timing_scale)
            .unwrap_or(1);
        if !(1..=TIMING_SCALE_MAX).contains(&timing_scale) {
            return Err(field_err(
                "cluster.timing_scale",
                format!("{timing_scale} is out of range"),
                format!("give 1 (a LAN, the default) up to {TIMING_SCALE_MAX}"),
            ));
        }
        let raft_listen = listen(
            "cluster.listen",
            self.cluster.map(|c| WireListen { listen: c.listen }),
        )?;
        let (api_listen, api_open) = api_section(self.api)?;
        if raft_listen == api_listen {
            return Err(field_err(
                "api.listen",
                "same as cluster.listen",
                "use another port, e.g. 7481",
            ));
        }
        let s = self.service.ok_or_else(|| {
            field_err(
                "service",
                "missing section",
                "add [service] with interface and vip",
            )
        })?;
        let interface = s.interface.ok_or_else(|| {
            field_err(
                "service.interface",
                "missing",
                "name the LAN interface, e.g. \"eth1\"",
            )
        })?;
        if interface.is_empty() || interface.len() > 15 || interface.contains('/') {
            return Err(field_err(
                "service.interface",
                format!("{interface:?} is not a valid interface name"),
                "use the name `ip link` shows, at most 15 characters",
            ));
        }
        let vip_s = s.vip.ok_or_else(|| {
            field_err(
                "service.vip",
                "missing",
                "set the floating address with prefix, e.g. \"10.0.0.10/24\"",
            )
        })?;
        let vip: Ipv4Net = vip_s.parse().map_err(|_| {
            field_err(
                "service.vip",
                format!("{vip_s:?} is not an IPv4 address with prefix length"),
                "write it as \"10.0.0.10/24\"",
            )
        })?;
        let a = vip.addr();
        if a.is_unspecified()
            || a.is_broadcast()
            || a.is_multicast()
            || a == vip.network()
            || a == vip.broadcast()
        {
            return Err(field_err(
                "service.vip",
                format!("{a} cannot be a host address in {}", vip.trunc()),
                "pick an unused host address of the LAN",
            ));
        }
        if raft_listen.ip() == std::net::IpAddr::V4(a) {
            return Err(field_err(
                "service.vip",
                "equals this node's own cluster address",
                "the VIP floats between nodes; give it its own address",
            ));
        }
        let limits = self.limits.unwrap_or_default().validate()?;
        let log_format = match self.log.and_then(|l| l.format) {
            None => LogFormat::Text,
            Some(f) => f.parse().map_err(|problem: String| {
                field_err(
                    "log.format",
                    problem,
                    "set `format = \"text\"` or `\"json\"` under [log]",
                )
            })?,
        };
        Ok(NodeConfig {
            limits,
            log_format,
            node_id,
            data_dir,
            artifact_dir,
            artifact_max_bytes,
            artifact_verify_every,
            raft_listen,
            timing_scale,
            api_listen,
            api_open,
            service: ServiceIface {
                interface,
                vip,
                dhcp_port: s.dhcp_port.unwrap_or(67),
                tftp_port: s.tftp_port.unwrap_or(69),
                http_port: s.http_port.unwrap_or(80),
                xdp: s.xdp.unwrap_or(true),
            },
        })
    }
}

impl NodeConfig {
    #[must_use]
    pub fn vip_addr(&self) -> Ipv4Addr {
        self.service.vip.addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
node_id = 1
data_dir = "/var/lib/tandem"
[cluster]
listen = "10.0.0.11:7480"
[api]
listen = "10.0.0.11:7481"
[service]
interface = "eth1"
vip = "10.0.0.10/24"
"#;

    #[test]
    fn parses_the_design_example() {
        let c = NodeConfig::parse(GOOD).unwrap();
        assert_eq!(c.node_id, 1);
        assert_eq!(c.vip_addr(), Ipv4Addr::new(10, 0, 0, 10));
        assert_eq!(c.artifact_dir, PathBuf::from("/var/lib/tandem/artifacts"));
        assert_eq!(c.service.dhcp_port, 67);
        assert_eq!(c.api_open, DEFAULT_OPEN_ROUTES);
        let closed = GOOD.replace(
            "listen = \"10.0.0.11:7481\"",
            "listen = \"10.0.0.11:7481\"\nopen = []",
        );
        assert!(NodeConfig::parse(&closed).unwrap().api_open.is_empty());
        let bad = GOOD.replace(
            "listen = \"10.0.0.11:7481\"",
            "listen = \"10.0.0.11:7481\"\nopen = [\"metrics\"]",
        );
        assert!(NodeConfig::parse(&bad)
            .unwrap_err()
            .to_string()
            .contains("api.open"));
        assert_eq!(c.service.http_port, 80);
        assert_eq!(c.limits, crate::config::PacketLimits::default());
    }

    #[test]
    fn timing_scale_is_1_by_default_and_refused_out_of_range_by_name() {
        assert_eq!(NodeConfig::parse(GOOD).unwrap().timing_scale, 1);
        let with = |n: &str| {
            GOOD.replace(
                "listen = \"10.0.0.11:7480\"",
                &format!("listen = \"10.0.0.11:7480\"\ntiming_scale = {n}"),
            )
        };
        assert_eq!(NodeConfig::parse(&with("20")).unwrap().timing_scale, 20);
        for bad in ["0", "101"] {
            let e = NodeConfig::parse(&with(bad)).unwrap_err().to_string();
            assert!(e.contains("cluster.timing_scale"), "{e}");
        }
    }

    #[test]
    fn log_format_is_text_by_default_json_on_request_and_named_when_wrong() {
        assert_eq!(NodeConfig::parse(GOOD).unwrap().log_format, LogFormat::Text);
        let json = format!("{GOOD}[log]\nformat = \"json\"\n");
        assert_eq!(
            NodeConfig::parse(&json).unwrap().log_format,
            LogFormat::Json
        );
        let bad = format!("{GOOD}[log]\nformat = \"yaml\"\n");
        let e = NodeConfig::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("log.format") && e.contains("\"json\""), "{e}");
    }

    #[test]
    fn limits_override_one_key_and_refuse_a_zero_burst() {
        let text = format!("{GOOD}\n[limits]\ndhcp_per_mac = {{ rate = 2, burst = 5 }}\n");
        let c = NodeConfig::parse(&text).unwrap();
        let d = crate::config::PacketLimits::default();
        assert_eq!(c.limits.dhcp_per_mac, crate::config::PacketLimit::new(2, 5));
        assert_eq!(c.limits.dhcp_per_relay, d.dhcp_per_relay);
        let off = format!("{GOOD}\n[limits]\narp_per_mac = {{ rate = 0, burst = 0 }}\n");
        assert_eq!(NodeConfig::parse(&off).unwrap().limits.arp_per_mac.rate, 0);
        let bad = format!("{GOOD}\n[limits]\ntftp_per_client = {{ rate = 5, burst = 0 }}\n");
        let e = NodeConfig::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("limits.tftp_per_client.burst"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        let bad_vip = GOOD.replace("10.0.0.10/24", "10.0.0.300/24");
        let e = NodeConfig::parse(&bad_vip).unwrap_err().to_string();
        assert!(e.contains("service.vip"), "{e}");
        let no_id = GOOD.replace("node_id = 1", "");
        let e = NodeConfig::parse(&no_id).unwrap_err().to_string();
        assert!(e.contains("node_id"), "{e}");
        let typo = GOOD.replace("interface =", "interfac =");
        let e = NodeConfig::parse(&typo).unwrap_err().to_string();
        assert!(e.contains("interfac"), "{e}");
        let zero = GOOD.replace("10.0.0.11:7481", "0.0.0.0:7481");
        let e = NodeConfig::parse(&zero).unwrap_err().to_string();
        assert!(e.contains("api.listen"), "{e}");
    }
}
