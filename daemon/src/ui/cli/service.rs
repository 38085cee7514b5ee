//! `tandem apply FILE` and `tandem export`: the replicated service config,
//! declaratively (it round-trips).

use std::path::Path;

use super::output::{CliError, Done, Out};
use super::reach::{Kind, Reach};
use crate::api::dto::ApplyDto;
use crate::model::ServiceConfig;

/// `tandem apply FILE`: parse and validate here, then `PUT /v1/config` on
/// the leader.
pub fn apply(r: &Reach, out: Out, file: &Path) -> Done {
    let text = std::fs::read_to_string(file).map_err(|e| {
        CliError::failed(
            format!("cannot read {}: {e}", file.display()),
            Some("give the path of a service config file (TOML)"),
        )
    })?;
    let cfg = crate::config::service::parse(&text).map_err(|e| {
        let msg = format!("{}: {e}", file.display());
        match msg.split_once("; fix: ") {
            Some((m, fix)) => CliError::failed(m, Some(fix)),
            None => CliError::failed(msg, None),
        }
    })?;
    let a: ApplyDto = r.call(Kind::Leader, |c| c.put("/v1/config", &cfg))?;
    out.show(&a, |a| {
        println!(
            "applied at index {}: {} subnet(s), {} reservation(s), {} profile(s)",
            a.applied_index, a.subnets, a.reservations, a.profiles
        );
    });
    Ok(())
}

/// `tandem export`: the cluster's service config as TOML (as JSON with `--json`).
pub fn export(r: &Reach, out: Out) -> Done {
    let c: ServiceConfig = r.read("/v1/config")?;
    out.show(&c, |c| print!("{}", crate::config::service::to_toml(c)));
    Ok(())
}
