//! `tandem lease list | show MAC|IP | release IP`.

use std::net::Ipv4Addr;

use clap::Subcommand;

use super::output::{Done, Out};
use super::reach::{Kind, Reach};
use crate::api::dto::LeaseDto;
use crate::api::leases::LeaseKey;

#[derive(Subcommand, Debug)]
pub enum LeaseCmd {
    /// Every lease record this node holds (bound, expired and declined).
    List,
    /// One lease, by address or by the client's MAC.
    Show {
        /// An IPv4 address (10.0.0.50) or a MAC (52:54:00:12:34:56).
        #[arg(value_name = "MAC|IP")]
        key: LeaseKey,
    },
    /// End the lease of IP now, through Raft (as a DHCPRELEASE does). The
    /// record stays, expired, so the client gets the same address back.
    Release { ip: Ipv4Addr },
}

/// Runs `tandem lease CMD`.
pub fn run(r: &Reach, out: Out, cmd: &LeaseCmd) -> Done {
    match cmd {
        LeaseCmd::List => {
            let l: Vec<LeaseDto> = r.read("/v1/leases")?;
            out.show(&l, |l| print_leases(l));
        }
        LeaseCmd::Show { key } => {
            let path = match key {
                LeaseKey::Ip(ip) => format!("/v1/leases/{ip}"),
                LeaseKey::Mac(mac) => format!("/v1/leases/{mac}"),
            };
            let l: LeaseDto = r.read(&path)?;
            out.show(&l, print_lease);
        }
        LeaseCmd::Release { ip } => {
            let path = format!("/v1/leases/{ip}/release");
            let l: LeaseDto = r.call(Kind::Leader, |c| {
                c.post::<_, LeaseDto>(&path, &serde_json::json!({}))
            })?;
            out.show(&l, |l| {
                println!(
                    "released {} (held by {}): {}",
                    l.lease.ip, l.lease.mac, l.status
                );
            });
        }
    }
    Ok(())
}

fn print_leases(ls: &[LeaseDto]) {
    println!(
        "{:<16} {:<18} {:<9} {:>8}  HOSTNAME",
        "IP", "MAC", "STATE", "EXPIRES"
    );
    for l in ls {
        println!(
            "{:<16} {:<18} {:<9} {:>7}s  {}",
            l.lease.ip,
            l.lease.mac,
            l.status,
            l.expires_in,
            l.lease.hostname.as_deref().unwrap_or("")
        );
    }
}

fn print_lease(l: &LeaseDto) {
    println!("ip         {}", l.lease.ip);
    println!("mac        {}", l.lease.mac);
    println!("state      {}", l.status);
    if let Some(h) = &l.lease.hostname {
        println!("hostname   {h}");
    }
    println!("granted_at {}", l.lease.granted_at);
    println!("expires_at {} (in {} s)", l.lease.expires_at, l.expires_in);
}
