use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::artifact::{is_sha256_hex, validate_name, Artifact, MAX_ARTIFACTS};
use super::config::{Reservation, ServiceConfig};
use super::lease::{Lease, LeaseState};
use super::mac::Mac;

/// What one Raft log entry asks the state machine to do. Every field that
/// depends on time or choice was fixed by the leader when it proposed, so
/// applying is deterministic on every replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Replace the whole service config (`tandem apply`).
    SetConfig { config: ServiceConfig },
    /// Add one reservation to the service config (`tandem reservation add`).
    /// An edit of the list in the state machine, not a whole config built
    /// from a read: two adds at once both survive. Refused (state unchanged)
    /// if the MAC or IP is reserved already, the IP is in no subnet or the
    /// profile does not exist; adding the very same reservation again is a
    /// no-op, so a retried add succeeds.
    AddReservation { reservation: Reservation },
    /// Drop the reservation of `mac` (`tandem reservation remove`).
    RemoveReservation { mac: Mac },
    /// Bind (or renew) `lease.ip` to `lease.mac`. Any other address the same
    /// MAC held is given up, so a client holds one address.
    Grant { lease: Lease },
    /// The client let go of the address (DHCPRELEASE or `tandem lease release`).
    /// The record stays, expired, so the client gets the same address back.
    Release { ip: Ipv4Addr, at: u64 },
    /// The client found the address in use (DHCPDECLINE): quarantine it.
    Decline {
        ip: Ipv4Addr,
        mac: Mac,
        at: u64,
        until: u64,
    },
    /// Name (or rename) the blob `sha256` `name` (`tandem artifact put`).
    /// The leader proposes it only after the blob is durable in its store.
    PutArtifact {
        name: String,
        sha256: String,
        size: u64,
        at: u64,
    },
    /// Drop the name (`tandem artifact rm`); a blob no name refers to any
    /// more loses its holders, and every node deletes it.
    RemoveArtifact { name: String },
    /// `node` holds (or no longer holds) a verified copy of the blob.
    ArtifactHeld {
        node: u64,
        sha256: String,
        held: bool,
    },
    /// `tandem cluster token`: a join token whose secret hashes to `hash`
    /// is valid until `expires_at`. Expired tokens are dropped at `at`.
    AddJoinToken {
        hash: String,
        expires_at: u64,
        at: u64,
    },
    /// A joiner used the token: it is consumed (one-time), if it exists, has
    /// not expired at `at`, and `node` was never removed.
    UseJoinToken { hash: String, node: u64, at: u64 },
    /// `node` was removed from the cluster: its certificate is refused from
    /// now on, and the id is never admitted again.
    RevokeNode { node: u64 },
}

/// At most this many reservations: the service config is one row, rewritten
/// on every edit, so the list stays small enough to rewrite per command.
pub const MAX_RESERVATIONS: usize = 65_536;

/// At most this many join tokens are outstanding; more is a script gone wrong.
pub const MAX_JOIN_TOKENS: usize = 64;

/// The replicated part of trust (DESIGN.md section 10): outstanding join
/// tokens and revoked node ids. Small: a few tokens and removed nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustState {
    /// sha256 (hex) of a join token's secret -> expiry (unix seconds).
    #[serde(default)]
    pub join_tokens: BTreeMap<String, u64>,
    /// Node ids removed from the cluster; their certificates are refused.
    #[serde(default)]
    pub revoked: BTreeSet<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum CommandResponse {
    Ok,
    /// The command was valid Raft-wise but does not apply (e.g. the address is
    /// held by another client); the state did not change.
    Rejected {
        reason: String,
    },
}

/// The replicated data. `apply` is pure, so replicas that apply the same log
/// hold the same state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub config: ServiceConfig,
    pub leases: BTreeMap<Ipv4Addr, Lease>,
    /// The artifact index: name -> blob. (`default`: snapshots and backups
    /// written before artifacts existed have neither map.)
    #[serde(default)]
    pub artifacts: BTreeMap<String, Artifact>,
    /// sha256 -> the nodes that hold a verified copy. Only blobs some name
    /// refers to have an entry, and no entry is empty.
    #[serde(default)]
    pub holders: BTreeMap<String, BTreeSet<u64>>,
    #[serde(default)]
    pub trust: TrustState,
    /// mac -> ip of its newest lease record; rebuilt after load.
    #[serde(skip)]
    by_mac: HashMap<Mac, Ipv4Addr>,
}

impl PartialEq for State {
    fn eq(&self, o: &Self) -> bool {
        self.config == o.config
            && self.leases == o.leases
            && self.artifacts == o.artifacts
            && self.holders == o.holders
            && self.trust == o.trust
    }
}

impl State {
    /// Rebuilds the derived index; call after deserializing.
    pub fn reindex(&mut self) {
        self.by_mac.clear();
        let mut newest: HashMap<Mac, (u64, Ipv4Addr)> = HashMap::new();
        for l in self
            .leases
            .values()
            .filter(|l| l.state == LeaseState::Bound)
        {
            let e = newest.entry(l.mac).or_insert((l.granted_at, l.ip));
            if l.granted_at >= e.0 {
                *e = (l.granted_at, l.ip);
            }
        }
        self.by_mac = newest.into_iter().map(|(m, (_, ip))| (m, ip)).collect();
    }

    /// The newest bound lease record of `mac`, live or expired.
    #[must_use]
    pub fn lease_of_mac(&self, mac: Mac) -> Option<&Lease> {
        self.by_mac.get(&mac).and_then(|ip| self.leases.get(ip))
    }

    #[must_use]
    pub fn lease_of_ip(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.leases.get(&ip)
    }

    /// Applies `cmd`; see [`State::apply_tracked`] for the rows it changed.
    pub fn apply(&mut self, cmd: &Command) -> CommandResponse {
        self.apply_tracked(cmd).0
    }

    /// Applies `cmd` and says which rows it changed, so a store that keeps
    /// one row per lease rewrites exactly those and never has to re-derive
    /// them (the two could drift apart).
    pub fn apply_tracked(&mut self, cmd: &Command) -> (CommandResponse, Changes) {
        let mut changes = Changes::default();
        let resp = match cmd {
            Command::SetConfig { config } => {
                self.config = config.clone();
                changes.config = true;
                CommandResponse::Ok
            }
            Command::AddReservation { reservation } => {
                self.add_reservation(reservation, &mut changes)
            }
            Command::RemoveReservation { mac } => self.remove_reservation(*mac, &mut changes),
            Command::Grant { lease } => {
                if let Some(cur) = self.leases.get(&lease.ip) {
                    if cur.mac != lease.mac
                        && cur.is_active(lease.granted_at)
                        && cur.state == LeaseState::Bound
                    {
                        return (
                            CommandResponse::Rejected {
                                reason: format!("{} is leased to {}", lease.ip, cur.mac),
                            },
                            changes,
                        );
                    }
                }
                if let Some(old) = self.by_mac.get(&lease.mac).copied() {
                    if old != lease.ip && self.leases.remove(&old).is_some() {
                        changes.leases.push(old);
                    }
                }
                if let Some(prev) = self.leases.get(&lease.ip) {
                    // Only drop the previous holder's index entry if it points here:
                    // it may hold another address (e.g. it declined this one).
                    if prev.mac != lease.mac && self.by_mac.get(&prev.mac) == Some(&lease.ip) {
                        self.by_mac.remove(&prev.mac);
                    }
                }
                self.leases.insert(lease.ip, lease.clone());
                self.by_mac.insert(lease.mac, lease.ip);
                changes.leases.push(lease.ip);
                CommandResponse::Ok
            }
            Command::Release { ip, at } => match self.leases.get_mut(ip) {
                Some(l) if l.state == LeaseState::Bound => {
                    l.expires_at = l.expires_at.min(*at);
                    changes.leases.push(*ip);
                    CommandResponse::Ok
                }
                _ => CommandResponse::Rejected {
                    reason: format!("{ip} is not leased"),
                },
            },
            Command::Decline { ip, mac, at, until } => {
                if let Some(prev) = self.leases.get(ip) {
                    if self.by_mac.get(&prev.mac) == Some(ip) {
                        self.by_mac.remove(&prev.mac);
                    }
                }
                self.leases.insert(
                    *ip,
                    Lease {
                        ip: *ip,
                        mac: *mac,
                        state: LeaseState::Declined,
                        hostname: None,
                        granted_at: *at,
                        expires_at: *until,
                    },
                );
                changes.leases.push(*ip);
                CommandResponse::Ok
            }
            Command::PutArtifact {
                name,
                sha256,
                size,
                at,
            } => self.put_artifact(name, sha256, *size, *at, &mut changes),
            Command::RemoveArtifact { name } => match self.artifacts.remove(name) {
                Some(old) => {
                    changes.artifacts.push(name.clone());
                    self.forget_unnamed(&old.sha256, &mut changes);
                    CommandResponse::Ok
                }
                None => CommandResponse::Rejected {
                    reason: format!("no artifact named {name:?}"),
                },
            },
            Command::ArtifactHeld { node, sha256, held } => {
                self.artifact_held(*node, sha256, *held, &mut changes)
            }
            Command::AddJoinToken { .. }
            | Command::UseJoinToken { .. }
            | Command::RevokeNode { .. } => {
                let (resp, trust_changed) = self.apply_trust(cmd);
                changes.trust = trust_changed;
                resp
            }
        };
        (resp, changes)
    }

    /// [`Command::AddReservation`]: the checks are repeated here, on the
    /// state the entry is applied to, because the leader's check before
    /// proposing may have raced another add. Reasons read like a config
    /// error: "field `F`: problem; fix: what to do".
    fn add_reservation(&mut self, r: &Reservation, changes: &mut Changes) -> CommandResponse {
        let c = &self.config;
        let refuse = |reason: String| CommandResponse::Rejected { reason };
        if let Some(cur) = c.reservation_for(r.mac) {
            if cur == r {
                return CommandResponse::Ok;
            }
            return refuse(format!(
                "field `mac`: {} is reserved already (ip {}); fix: `tandem reservation remove {}` first",
                r.mac, cur.ip, r.mac
            ));
        }
        if let Some(other) = c.reservation_of_ip(r.ip) {
            return refuse(format!(
                "field `ip`: {} is reserved for {} already; fix: give another address, or `tandem reservation remove {}` first",
                r.ip, other.mac, other.mac
            ));
        }
        if c.subnet_for(r.ip).is_none() {
            return refuse(format!(
                "field `ip`: {} is in no subnet of the service config; fix: pick an address inside a [[subnet]] (`tandem export` lists them)",
                r.ip
            ));
        }
        if let Some(p) = &r.profile {
            if c.profile(p).is_none() {
                return refuse(format!(
                    "field `profile`: no profile named {p:?}; fix: name a [[profile]] of the service config, or add one with `tandem apply`"
                ));
            }
        }
        if c.reservations.len() >= MAX_RESERVATIONS {
            return refuse(format!(
                "field `mac`: the service config holds {MAX_RESERVATIONS} reservations already; fix: remove some first"
            ));
        }
        self.config.reservations.push(r.clone());
        changes.config = true;
        CommandResponse::Ok
    }

    /// [`Command::RemoveReservation`].
    fn remove_reservation(&mut self, mac: Mac, changes: &mut Changes) -> CommandResponse {
        let before = self.config.reservations.len();
        self.config.reservations.retain(|r| r.mac != mac);
        if self.config.reservations.len() == before {
            return CommandResponse::Rejected {
                reason: format!(
                    "field `mac`: {mac} has no reservation; fix: `tandem reservation list` shows the reserved MACs"
                ),
            };
        }
        changes.config = true;
        CommandResponse::Ok
    }

    fn artifact_held(
        &mut self,
        node: u64,
        sha256: &str,
        held: bool,
        changes: &mut Changes,
    ) -> CommandResponse {
        if held {
            if !self.is_named(sha256) {
                // A report that raced an `artifact rm`: nothing names it.
                return CommandResponse::Rejected {
                    reason: format!("no artifact has sha256 {sha256}"),
                };
            }
            if self
                .holders
                .entry(sha256.to_owned())
                .or_default()
                .insert(node)
            {
                changes.holders.push(sha256.to_owned());
            }
        } else if let Some(set) = self.holders.get_mut(sha256) {
            if set.remove(&node) {
                if set.is_empty() {
                    self.holders.remove(sha256);
                }
                changes.holders.push(sha256.to_owned());
            }
        }
        CommandResponse::Ok
    }

    fn put_artifact(
        &mut self,
        name: &str,
        sha256: &str,
        size: u64,
        at: u64,
        changes: &mut Changes,
    ) -> CommandResponse {
        if let Err(e) = validate_name(name) {
            return CommandResponse::Rejected {
                reason: e.to_string(),
            };
        }
        if !is_sha256_hex(sha256) {
            return CommandResponse::Rejected {
                reason: format!("{sha256:?} is not a lower-case hex SHA-256"),
            };
        }
        if !self.artifacts.contains_key(name) && self.artifacts.len() >= MAX_ARTIFACTS {
            return CommandResponse::Rejected {
                reason: format!(
                    "the index holds {MAX_ARTIFACTS} artifacts already; remove some first"
                ),
            };
        }
        let new = Artifact {
            sha256: sha256.to_owned(),
            size,
            added_at: at,
        };
        let old = self.artifacts.insert(name.to_owned(), new);
        changes.artifacts.push(name.to_owned());
        if let Some(old) = old {
            if old.sha256 != sha256 {
                self.forget_unnamed(&old.sha256, changes);
            }
        }
        CommandResponse::Ok
    }

    /// Whether some name refers to the blob `sha256`.
    #[must_use]
    pub fn is_named(&self, sha256: &str) -> bool {
        self.artifacts.values().any(|a| a.sha256 == sha256)
    }

    /// Drops the holders of a blob that no name refers to any more.
    fn forget_unnamed(&mut self, sha256: &str, changes: &mut Changes) {
        if !self.is_named(sha256) && self.holders.remove(sha256).is_some() {
            changes.holders.push(sha256.to_owned());
        }
    }

    /// The nodes that hold the blob of artifact `name`.
    #[must_use]
    pub fn holders_of(&self, name: &str) -> Option<&BTreeSet<u64>> {
        let a = self.artifacts.get(name)?;
        self.holders.get(&a.sha256)
    }

    /// The trust commands: join tokens and revocations. Returns the answer
    /// and whether the trust state changed.
    fn apply_trust(&mut self, cmd: &Command) -> (CommandResponse, bool) {
        let mut changed = false;
        let resp = match cmd {
            Command::AddJoinToken {
                hash,
                expires_at,
                at,
            } => {
                let t = &mut self.trust.join_tokens;
                let before = t.len();
                t.retain(|_, exp| *exp > *at);
                changed = t.len() != before;
                if t.len() >= MAX_JOIN_TOKENS {
                    CommandResponse::Rejected {
                        reason: format!(
                            "{MAX_JOIN_TOKENS} join tokens are outstanding; let some expire first"
                        ),
                    }
                } else {
                    t.insert(hash.clone(), *expires_at);
                    changed = true;
                    CommandResponse::Ok
                }
            }
            Command::UseJoinToken { hash, node, at } => {
                if self.trust.revoked.contains(node) {
                    CommandResponse::Rejected {
                        reason: format!(
                            "node id {node} was removed from this cluster and its certificate \
                         is revoked; give the new node another node_id"
                        ),
                    }
                } else {
                    match self.trust.join_tokens.get(hash).copied() {
                        Some(exp) if exp > *at => {
                            self.trust.join_tokens.remove(hash);
                            changed = true;
                            CommandResponse::Ok
                        }
                        Some(_) => CommandResponse::Rejected {
                            reason: "the join token has expired; run `tandem cluster token` again"
                                .into(),
                        },
                        None => CommandResponse::Rejected {
                            reason: "the join token is unknown or was already used; \
                                 run `tandem cluster token` on a member for a new one"
                                .into(),
                        },
                    }
                }
            }
            Command::RevokeNode { node } => {
                changed = self.trust.revoked.insert(*node);
                CommandResponse::Ok
            }
            _ => unreachable!("apply_tracked passes only trust commands"),
        };
        (resp, changed)
    }
}

/// The rows one command changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The service config was replaced.
    pub config: bool,
    /// Addresses whose lease record was inserted, changed or removed.
    pub leases: Vec<Ipv4Addr>,
    /// Artifact names whose index entry was inserted, changed or removed.
    pub artifacts: Vec<String>,
    /// Blobs (sha256) whose holder set was inserted, changed or removed.
    pub holders: Vec<String>,
    /// The trust state (join tokens, revocations) changed.
    pub trust: bool,
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::SetConfig { config } => write!(
                f,
                "set_config(subnets={} reservations={} profiles={})",
                config.subnets.len(),
                config.reservations.len(),
                config.profiles.len()
            ),
            Command::Grant { lease } => {
                write!(
                    f,
                    "grant({} -> {} until {})",
                    lease.ip, lease.mac, lease.expires_at
                )
            }
            Command::AddReservation { reservation: r } => {
                write!(f, "add_reservation({} -> {})", r.mac, r.ip)
            }
            Command::RemoveReservation { mac } => write!(f, "remove_reservation({mac})"),
            Command::Release { ip, at } => write!(f, "release({ip} at {at})"),
            Command::Decline { ip, mac, until, .. } => {
                write!(f, "decline({ip} by {mac} until {until})")
            }
            Command::PutArtifact {
                name, sha256, size, ..
            } => write!(f, "put_artifact({name} -> {sha256}, {size} bytes)"),
            Command::RemoveArtifact { name } => write!(f, "remove_artifact({name})"),
            Command::ArtifactHeld { node, sha256, held } => {
                write!(f, "artifact_held(node {node} {sha256} {held})")
            }
            // Never the hash itself in a log line: a prefix names it.
            Command::AddJoinToken {
                hash, expires_at, ..
            } => write!(
                f,
                "add_join_token({}.. until {expires_at})",
                &hash[..hash.len().min(8)]
            ),
            Command::UseJoinToken { hash, node, .. } => {
                write!(
                    f,
                    "use_join_token({}.. by node {node})",
                    &hash[..hash.len().min(8)]
                )
            }
            Command::RevokeNode { node } => write!(f, "revoke_node({node})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(ip: [u8; 4], mac: u8, at: u64) -> Lease {
        Lease {
            ip: ip.into(),
            mac: Mac([2, 0, 0, 0, 0, mac]),
            state: LeaseState::Bound,
            hostname: None,
            granted_at: at,
            expires_at: at + 600,
        }
    }

    fn served() -> State {
        let mut s = State::default();
        let config: ServiceConfig = serde_json::from_value(serde_json::json!({
            "subnet": [{"cidr": "10.0.0.0/24", "pools": ["10.0.0.100-10.0.0.200"]}],
            "profile": [{"name": "pxe", "bios": "undionly.kpxe"}],
        }))
        .unwrap();
        s.apply(&Command::SetConfig { config });
        s
    }

    fn resv(mac: u8, ip: [u8; 4], profile: Option<&str>) -> Command {
        Command::AddReservation {
            reservation: Reservation {
                mac: Mac([2, 0, 0, 0, 0, mac]),
                ip: ip.into(),
                hostname: Some(format!("host{mac}")),
                profile: profile.map(str::to_owned),
            },
        }
    }

    fn rejected(r: CommandResponse) -> String {
        match r {
            CommandResponse::Rejected { reason } => reason,
            CommandResponse::Ok => panic!("accepted"),
        }
    }

    #[test]
    fn two_reservation_adds_from_one_read_both_survive() {
        // Both adds were checked against the same state (as two CLI calls at
        // once are); applied in turn, neither loses the other.
        let mut s = served();
        let (r, ch) = s.apply_tracked(&resv(1, [10, 0, 0, 11], Some("pxe")));
        assert_eq!(r, CommandResponse::Ok);
        assert!(ch.config);
        assert_eq!(s.apply(&resv(2, [10, 0, 0, 12], None)), CommandResponse::Ok);
        let ips: Vec<_> = s
            .config
            .reservations
            .iter()
            .map(|r| r.ip.to_string())
            .collect();
        assert_eq!(ips, ["10.0.0.11", "10.0.0.12"]);
        // The very same add again (a retry) is a no-op that succeeds.
        let (r, ch) = s.apply_tracked(&resv(2, [10, 0, 0, 12], None));
        assert_eq!((r, ch.config), (CommandResponse::Ok, false));
        assert_eq!(s.config.reservations.len(), 2);
    }

    #[test]
    fn reservation_adds_that_clash_or_dangle_are_refused_and_change_nothing() {
        let mut s = served();
        s.apply(&resv(1, [10, 0, 0, 11], None));
        let before = s.config.clone();
        let r = rejected(s.apply(&resv(1, [10, 0, 0, 13], None)));
        assert!(
            r.starts_with("field `mac`") && r.contains("remove 02:00:00:00:00:01"),
            "{r}"
        );
        let r = rejected(s.apply(&resv(3, [10, 0, 0, 11], None)));
        assert!(
            r.starts_with("field `ip`") && r.contains("02:00:00:00:00:01"),
            "{r}"
        );
        let r = rejected(s.apply(&resv(4, [192, 168, 0, 1], None)));
        assert!(
            r.starts_with("field `ip`") && r.contains("no subnet"),
            "{r}"
        );
        let r = rejected(s.apply(&resv(5, [10, 0, 0, 15], Some("nope"))));
        assert!(
            r.starts_with("field `profile`") && r.contains("; fix: "),
            "{r}"
        );
        assert_eq!(s.config, before);
    }

    #[test]
    fn reservation_remove_drops_one_and_refuses_an_unknown_mac() {
        let mut s = served();
        s.apply(&resv(1, [10, 0, 0, 11], None));
        s.apply(&resv(2, [10, 0, 0, 12], None));
        let gone = Command::RemoveReservation {
            mac: Mac([2, 0, 0, 0, 0, 1]),
        };
        let (r, ch) = s.apply_tracked(&gone);
        assert_eq!((r, ch.config), (CommandResponse::Ok, true));
        assert_eq!(s.config.reservations.len(), 1);
        assert_eq!(s.config.reservations[0].mac, Mac([2, 0, 0, 0, 0, 2]));
        let r = rejected(s.apply(&gone));
        assert!(
            r.starts_with("field `mac`") && r.contains("no reservation"),
            "{r}"
        );
        // The commands travel in the log as JSON.
        let back: Command = serde_json::from_str(&serde_json::to_string(&gone).unwrap()).unwrap();
        assert_eq!(back, gone);
        assert_eq!(gone.to_string(), "remove_reservation(02:00:00:00:00:01)");
    }

    #[test]
    fn grant_moves_a_mac_and_refuses_a_held_address() {
        let mut s = State::default();
        assert_eq!(
            s.apply(&Command::Grant {
                lease: lease([10, 0, 0, 5], 1, 100)
            }),
            CommandResponse::Ok
        );
        // Another client cannot take a live lease.
        assert!(matches!(
            s.apply(&Command::Grant {
                lease: lease([10, 0, 0, 5], 2, 101)
            }),
            CommandResponse::Rejected { .. }
        ));
        // The same client moving to a new address gives up the old one.
        assert_eq!(
            s.apply(&Command::Grant {
                lease: lease([10, 0, 0, 6], 1, 102)
            }),
            CommandResponse::Ok
        );
        assert!(s.lease_of_ip([10, 0, 0, 5].into()).is_none());
        assert_eq!(
            s.lease_of_mac(Mac([2, 0, 0, 0, 0, 1])).unwrap().ip,
            Ipv4Addr::new(10, 0, 0, 6)
        );
        // Once expired, another client may take it.
        assert_eq!(
            s.apply(&Command::Grant {
                lease: lease([10, 0, 0, 6], 2, 800)
            }),
            CommandResponse::Ok
        );
        assert!(s.lease_of_mac(Mac([2, 0, 0, 0, 0, 1])).is_none());
    }

    #[test]
    fn index_survives_decline_then_regrant() {
        // A client that declined an address keeps its own lease in the index
        // when another client is later granted the declined address.
        let mut s = State::default();
        s.apply(&Command::Grant {
            lease: lease([10, 0, 0, 1], 1, 100),
        });
        s.apply(&Command::Decline {
            ip: [10, 0, 0, 2].into(),
            mac: Mac([2, 0, 0, 0, 0, 1]),
            at: 100,
            until: 110,
        });
        s.apply(&Command::Grant {
            lease: lease([10, 0, 0, 2], 2, 200),
        });
        let mut t = s.clone();
        t.reindex();
        for m in 1..=2 {
            let mac = Mac([2, 0, 0, 0, 0, m]);
            assert_eq!(
                s.lease_of_mac(mac).map(|l| l.ip),
                t.lease_of_mac(mac).map(|l| l.ip),
                "mac {m}"
            );
        }
        assert_eq!(
            s.lease_of_mac(Mac([2, 0, 0, 0, 0, 1])).unwrap().ip,
            Ipv4Addr::new(10, 0, 0, 1)
        );
    }

    #[test]
    fn reindex_matches_incremental_index() {
        let mut s = State::default();
        s.apply(&Command::Grant {
            lease: lease([10, 0, 0, 5], 1, 100),
        });
        s.apply(&Command::Grant {
            lease: lease([10, 0, 0, 7], 3, 100),
        });
        s.apply(&Command::Release {
            ip: [10, 0, 0, 7].into(),
            at: 150,
        });
        let json = serde_json::to_string(&s).unwrap();
        let mut t: State = serde_json::from_str(&json).unwrap();
        t.reindex();
        assert_eq!(t, s);
        assert_eq!(
            t.lease_of_mac(Mac([2, 0, 0, 0, 0, 3])).unwrap().expires_at,
            150
        );
    }

    /// `apply_tracked` names exactly the rows whose content changed: the
    /// store rewrites those rows only, so a missing one would be lost on
    /// disk and an extra one would only cost a write.
    #[test]
    fn tracked_changes_are_exactly_the_rows_that_differ() {
        let mut s = State::default();
        // A deterministic mix: grants that move MACs, take expired addresses
        // and are refused, releases of held and free addresses, declines.
        let mut x: u32 = 12_345;
        for step in 0..2_000u64 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let ip = Ipv4Addr::new(10, 0, 0, (x >> 8) as u8 % 16);
            let mac = Mac([2, 0, 0, 0, 0, (x >> 16) as u8 % 12]);
            let at = step * 50;
            let cmd = match (x >> 24) % 6 {
                0..=2 => Command::Grant {
                    lease: Lease {
                        ip,
                        mac,
                        state: LeaseState::Bound,
                        hostname: None,
                        granted_at: at,
                        expires_at: at + 600,
                    },
                },
                3 | 4 => Command::Release { ip, at },
                _ => Command::Decline {
                    ip,
                    mac,
                    at,
                    until: at + 100,
                },
            };
            let before = s.leases.clone();
            let (_, changes) = s.apply_tracked(&cmd);
            let differ: std::collections::BTreeSet<Ipv4Addr> = before
                .keys()
                .chain(s.leases.keys())
                .filter(|ip| before.get(ip) != s.leases.get(ip))
                .copied()
                .collect();
            let named: std::collections::BTreeSet<Ipv4Addr> =
                changes.leases.iter().copied().collect();
            assert!(
                differ.is_subset(&named),
                "step {step}: {cmd} changed {differ:?} but named {named:?}"
            );
            assert!(!changes.config);
        }
        let (_, changes) = s.apply_tracked(&Command::SetConfig {
            config: ServiceConfig::default(),
        });
        assert_eq!(
            changes,
            Changes {
                config: true,
                ..Changes::default()
            }
        );
    }

    fn put(name: &str, sha: char) -> Command {
        Command::PutArtifact {
            name: name.into(),
            sha256: sha.to_string().repeat(64),
            size: 10,
            at: 1,
        }
    }

    fn held(node: u64, sha: char, held: bool) -> Command {
        Command::ArtifactHeld {
            node,
            sha256: sha.to_string().repeat(64),
            held,
        }
    }

    #[test]
    fn artifact_commands_keep_holders_for_named_blobs_only() {
        let mut st = State::default();
        let sha_a = "a".repeat(64);
        let sha_b = "b".repeat(64);
        // A report for a blob nothing names is refused.
        assert!(matches!(
            st.apply(&held(1, 'a', true)),
            CommandResponse::Rejected { .. }
        ));
        let (resp, ch) = st.apply_tracked(&put("ipxe.efi", 'a'));
        assert_eq!(resp, CommandResponse::Ok);
        assert_eq!(ch.artifacts, vec!["ipxe.efi".to_string()]);
        let (_, ch) = st.apply_tracked(&held(1, 'a', true));
        assert_eq!(ch.holders, vec![sha_a.clone()]);
        // Holding twice changes nothing.
        let (_, ch) = st.apply_tracked(&held(1, 'a', true));
        assert!(ch.holders.is_empty());
        st.apply(&held(2, 'a', true));
        assert_eq!(st.holders_of("ipxe.efi").unwrap().len(), 2);
        // A second name for the same blob shares its holders.
        st.apply(&put("copy.efi", 'a'));
        assert_eq!(st.holders_of("copy.efi"), st.holders_of("ipxe.efi"));
        // Renaming ipxe.efi to new bytes keeps a's holders (copy.efi names it).
        let (_, ch) = st.apply_tracked(&put("ipxe.efi", 'b'));
        assert!(ch.holders.is_empty());
        assert!(st.holders_of("ipxe.efi").is_none());
        // Removing the last name of a drops its holders.
        let (resp, ch) = st.apply_tracked(&Command::RemoveArtifact {
            name: "copy.efi".into(),
        });
        assert_eq!(resp, CommandResponse::Ok);
        assert_eq!(ch.holders, vec![sha_a.clone()]);
        assert!(!st.holders.contains_key(&sha_a));
        // Not held any more: the last holder leaving drops the entry.
        st.apply(&held(3, 'b', true));
        let (_, ch) = st.apply_tracked(&held(3, 'b', false));
        assert_eq!(ch.holders, vec![sha_b.clone()]);
        assert!(!st.holders.contains_key(&sha_b));
        assert!(matches!(
            st.apply(&Command::RemoveArtifact {
                name: "nope".into()
            }),
            CommandResponse::Rejected { .. }
        ));
        // Round-trips through serde (snapshots), and old snapshots load.
        let json = serde_json::to_string(&st).unwrap();
        let back: State = serde_json::from_str(&json).unwrap();
        assert_eq!(back, st);
        let old: State = serde_json::from_str(r#"{"config":{},"leases":{}}"#).unwrap();
        assert!(old.artifacts.is_empty() && old.holders.is_empty());
    }

    #[test]
    fn put_artifact_refuses_bad_names_hashes_and_a_full_index() {
        let mut s = State::default();
        assert!(matches!(
            s.apply(&put("../etc/passwd", 'a')),
            CommandResponse::Rejected { reason } if reason.contains("'.'")
        ));
        assert!(matches!(
            s.apply(&Command::PutArtifact {
                name: "x".into(),
                sha256: "A".repeat(64),
                size: 1,
                at: 1
            }),
            CommandResponse::Rejected { .. }
        ));
        for i in 0..super::super::artifact::MAX_ARTIFACTS {
            assert_eq!(s.apply(&put(&format!("f{i}"), 'c')), CommandResponse::Ok);
        }
        assert!(matches!(
            s.apply(&put("one-more", 'c')),
            CommandResponse::Rejected { .. }
        ));
        // Replacing an existing name is still allowed.
        assert_eq!(s.apply(&put("f0", 'd')), CommandResponse::Ok);
    }

    #[test]
    fn join_tokens_are_one_time_expire_and_respect_revocation() {
        let mut s = State::default();
        let add = |hash: &str, exp| Command::AddJoinToken {
            hash: hash.into(),
            expires_at: exp,
            at: 100,
        };
        let use_ = |hash: &str, node, at| Command::UseJoinToken {
            hash: hash.into(),
            node,
            at,
        };
        assert_eq!(s.apply(&add("aa", 200)), CommandResponse::Ok);
        assert_eq!(s.apply(&add("bb", 150)), CommandResponse::Ok);
        // Unknown, then used once, then used again.
        assert!(
            matches!(s.apply(&use_("cc", 2, 110)), CommandResponse::Rejected { reason } if reason.contains("unknown"))
        );
        let (r, ch) = s.apply_tracked(&use_("aa", 2, 110));
        assert_eq!(r, CommandResponse::Ok);
        assert!(ch.trust);
        assert!(
            matches!(s.apply(&use_("aa", 3, 111)), CommandResponse::Rejected { reason } if reason.contains("already used"))
        );
        // Expired.
        assert!(
            matches!(s.apply(&use_("bb", 3, 150)), CommandResponse::Rejected { reason } if reason.contains("expired"))
        );
        // A revoked id is never admitted again, and keeps the token.
        assert_eq!(
            s.apply(&Command::RevokeNode { node: 3 }),
            CommandResponse::Ok
        );
        let later = Command::AddJoinToken {
            hash: "dd".into(),
            expires_at: 900,
            at: 200,
        };
        assert_eq!(s.apply(&later), CommandResponse::Ok);
        assert!(s.trust.join_tokens.contains_key("dd"));
        // Expired tokens were dropped when "dd" was added.
        assert!(!s.trust.join_tokens.contains_key("bb"));
        assert!(
            matches!(s.apply(&use_("dd", 3, 120)), CommandResponse::Rejected { reason } if reason.contains("removed"))
        );
        assert!(s.trust.join_tokens.contains_key("dd"));
        // The cap holds.
        for i in 0..MAX_JOIN_TOKENS {
            s.apply(&add(&format!("t{i}"), 900));
        }
        assert_eq!(s.trust.join_tokens.len(), MAX_JOIN_TOKENS);
        // Survives serialisation (snapshots).
        let t: State = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(t.trust, s.trust);
    }
}
