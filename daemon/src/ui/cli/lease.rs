//! `tandem lease`.

use clap::Subcommand;

use crate::model::{Lease, LeaseState};

#[derive(Subcommand, Debug)]
pub enum LeaseCmd {
    List {
        #[arg(long)]
        json: bool,
    },
}

pub fn print_leases(ls: &[Lease]) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!(
        "{:<16} {:<18} {:<9} {:>8}  HOSTNAME",
        "IP", "MAC", "STATE", "EXPIRES"
    );
    for l in ls {
        let state = match l.state {
            LeaseState::Bound if l.is_active(now) => "bound",
            LeaseState::Bound => "expired",
            LeaseState::Declined => "declined",
        };
        let left = l.expires_at.saturating_sub(now);
        println!(
            "{:<16} {:<18} {:<9} {:>7}s  {}",
            l.ip,
            l.mac,
            state,
            left,
            l.hostname.as_deref().unwrap_or("")
        );
    }
}
