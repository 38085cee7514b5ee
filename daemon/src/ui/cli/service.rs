//! `tandem apply FILE` and `tandem export`: the replicated service config,
//! declaratively (it round-trips).

use std::path::Path;
use std::process::ExitCode;

use super::output::fail;
use crate::api::client::Client;
use crate::api::dto::ApplyDto;
use crate::model::ServiceConfig;

/// `tandem apply FILE`: parse and validate here, then `PUT /v1/config`.
pub fn apply(client: &Client, file: &Path) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tandem: cannot read {}: {e}", file.display());
            return ExitCode::from(1);
        }
    };
    let cfg = match crate::config::service::parse(&text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tandem: {}: {e}", file.display());
            return ExitCode::from(1);
        }
    };
    match client.put::<_, ApplyDto>("/v1/config", &cfg) {
        Ok(a) => {
            println!(
                "applied at index {}: {} subnet(s), {} reservation(s), {} profile(s)",
                a.applied_index, a.subnets, a.reservations, a.profiles
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// `tandem export`: the cluster's service config as TOML.
pub fn export(client: &Client) -> ExitCode {
    match client.get::<ServiceConfig>("/v1/config") {
        Ok(c) => {
            print!("{}", crate::config::service::to_toml(&c));
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}
