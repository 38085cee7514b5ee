//! How full each subnet's pools are, from the replicated lease table: what
//! `tandem_dhcp_leases{subnet,state}` reports on every node.

use super::lease::LeaseState;
use super::state::State;

/// One subnet's pool use at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolUsage {
    /// The subnet as configured, e.g. `10.99.0.0/16`.
    pub subnet: String,
    /// Live bound leases with an address in a pool.
    pub bound: u64,
    /// Live declined (quarantined) addresses in a pool.
    pub declined: u64,
    /// Pool addresses that no live lease holds. Reserved addresses outside
    /// the pools are not counted anywhere: they never come from a pool.
    pub free: u64,
}

/// Pool use of every configured subnet at Unix time `now`. Expired leases
/// count as free (they stay in the table only so a returning client can get
/// its old address back). Linear in the lease table.
#[must_use]
pub fn pool_usage(s: &State, now: u64) -> Vec<PoolUsage> {
    s.config
        .subnets
        .iter()
        .map(|sub| {
            let size: u64 = sub.pools.iter().map(super::config::PoolRange::len).sum();
            let (mut bound, mut declined) = (0, 0);
            for l in s.leases.values() {
                if !l.is_active(now) || !sub.pools.iter().any(|p| p.contains(l.ip)) {
                    continue;
                }
                match l.state {
                    LeaseState::Bound => bound += 1,
                    LeaseState::Declined => declined += 1,
                }
            }
            PoolUsage {
                subnet: sub.cidr.to_string(),
                bound,
                declined,
                free: size.saturating_sub(bound + declined),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::model::{Command, Lease, Mac, PoolRange, ServiceConfig, Subnet};

    fn lease(ip: [u8; 4], mac: u8, state: LeaseState, expires_at: u64) -> Lease {
        Lease {
            ip: Ipv4Addr::from(ip),
            mac: Mac([2, 0, 0, 0, 0, mac]),
            state,
            hostname: None,
            granted_at: 0,
            expires_at,
        }
    }

    #[test]
    fn counts_live_leases_in_pools_only() {
        let mut sub: Subnet = toml::from_str(
            "cidr = \"10.0.0.0/24\"\npools = [\"10.0.0.10-10.0.0.19\", \"10.0.0.30-10.0.0.34\"]",
        )
        .unwrap();
        sub.pools.push(PoolRange {
            start: Ipv4Addr::new(10, 0, 0, 40),
            end: Ipv4Addr::new(10, 0, 0, 39), // reversed: empty
        });
        let mut st = State::default();
        st.config = ServiceConfig {
            subnets: vec![sub],
            ..ServiceConfig::default()
        };
        for l in [
            lease([10, 0, 0, 10], 1, LeaseState::Bound, 100),
            lease([10, 0, 0, 31], 2, LeaseState::Bound, 100),
            lease([10, 0, 0, 11], 3, LeaseState::Declined, 100),
            lease([10, 0, 0, 12], 4, LeaseState::Bound, 50), // expired at 60
            lease([10, 0, 0, 5], 5, LeaseState::Bound, 100), // reserved, outside the pools
        ] {
            st.apply(&Command::Grant { lease: l });
        }
        assert_eq!(
            pool_usage(&st, 60),
            vec![PoolUsage {
                subnet: "10.0.0.0/24".into(),
                bound: 2,
                declined: 1,
                free: 15 - 3,
            }]
        );
    }
}
