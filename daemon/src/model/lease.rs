use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::mac::Mac;

/// Why an address is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// Acknowledged to the lease's MAC; valid until its expiry time.
    Bound,
    /// A client declined it (someone else answers ARP for it). Nobody gets it
    /// until `expires_at`, so a conflicting host is not handed out again at once.
    Declined,
}

/// One address and who holds it. Times are Unix seconds chosen by the leader
/// when it proposed the lease, so every replica applies the same value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub ip: Ipv4Addr,
    pub mac: Mac,
    pub state: LeaseState,
    /// Client-supplied hostname (option 12) or the reservation's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// When the lease was last granted or renewed.
    pub granted_at: u64,
    pub expires_at: u64,
}

impl Lease {
    /// A lease is live while it has not expired; expired leases stay in the
    /// table (so a returning client can get its old address) until reused.
    #[must_use]
    pub fn is_active(&self, now: u64) -> bool {
        now < self.expires_at
    }
}
