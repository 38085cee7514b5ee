//! Where the CLI sends its requests and what it presents: the API address
//! (`--api`, else the node config's `api.listen`), the cluster CA and the
//! admin token (`--ca`, `--token-file`, `TANDEM_TOKEN`, else the node's own).

use std::path::Path;

use crate::api::client::Access;

/// The API to talk to: `api` if given, else the node config's `api.listen`,
/// else 127.0.0.1:7481.
#[must_use]
pub fn api_base(api: Option<&str>, config: &Path) -> String {
    if let Some(a) = api {
        return a.to_owned();
    }
    match crate::config::NodeConfig::load(config) {
        Ok(c) => c.api_listen.to_string(),
        Err(_) => "127.0.0.1:7481".into(),
    }
}

/// What the CLI trusts and presents: `--ca` or the node's CA file, and
/// `TANDEM_TOKEN`, `--token-file` or the node's admin token file.
pub fn access(config: &Path, ca: Option<&Path>, token_file: Option<&Path>) -> Access {
    let data_dir = crate::config::NodeConfig::load(config)
        .ok()
        .map(|c| c.data_dir);
    let mut a = data_dir.as_deref().map(Access::local).unwrap_or_default();
    if let Some(ca) = ca {
        a.ca_pem = std::fs::read_to_string(ca).ok();
        if a.ca_pem.is_none() {
            eprintln!("tandem: cannot read the CA certificate {}", ca.display());
        }
    }
    if let Some(f) = token_file {
        a.token = crate::trust::token::read_admin_token(f)
            .map_err(|e| eprintln!("tandem: {e}"))
            .ok();
    }
    if let Ok(t) = std::env::var("TANDEM_TOKEN") {
        if !t.trim().is_empty() {
            a.token = Some(t.trim().to_owned());
        }
    }
    a
}
