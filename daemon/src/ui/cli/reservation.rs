//! `tandem reservation add MAC IP [--hostname H] [--profile P] | remove MAC | list`:
//! edits of the replicated service config's reservations, one Raft command
//! each (two adds at once both survive); `tandem export` shows them.

use std::net::Ipv4Addr;

use clap::Subcommand;

use super::output::{Done, Out};
use super::reach::{Kind, Reach};
use crate::model::{Mac, Reservation};

#[derive(Subcommand, Debug)]
pub enum ReservationCmd {
    /// Reserve IP for MAC: that client always gets IP.
    Add {
        mac: Mac,
        ip: Ipv4Addr,
        /// The host name the client is given (option 12).
        #[arg(long)]
        hostname: Option<String>,
        /// A boot profile of the service config; overrides the subnet's.
        #[arg(long)]
        profile: Option<String>,
    },
    /// Drop the reservation of MAC.
    Remove { mac: Mac },
    /// Every reservation.
    List,
}

/// Runs `tandem reservation CMD`.
pub fn run(r: &Reach, out: Out, cmd: &ReservationCmd) -> Done {
    match cmd {
        ReservationCmd::Add {
            mac,
            ip,
            hostname,
            profile,
        } => {
            let want = Reservation {
                mac: *mac,
                ip: *ip,
                hostname: hostname.clone(),
                profile: profile.clone(),
            };
            let got: Reservation = r.call(Kind::Leader, |c| c.post("/v1/reservations", &want))?;
            out.show(&got, |g| println!("reserved {} for {}", g.ip, g.mac));
        }
        ReservationCmd::Remove { mac } => {
            let path = format!("/v1/reservations/{mac}");
            let gone: Reservation = r.call(Kind::Leader, |c| c.delete(&path))?;
            out.show(&gone, |g| {
                println!("removed the reservation of {} ({})", g.mac, g.ip);
            });
        }
        ReservationCmd::List => {
            let l: Vec<Reservation> = r.read("/v1/reservations")?;
            out.show(&l, |l| {
                println!("{:<18} {:<16} {:<24} PROFILE", "MAC", "IP", "HOSTNAME");
                for x in l {
                    println!(
                        "{:<18} {:<16} {:<24} {}",
                        x.mac,
                        x.ip,
                        x.hostname.as_deref().unwrap_or("-"),
                        x.profile.as_deref().unwrap_or("-")
                    );
                }
            });
        }
    }
    Ok(())
}
