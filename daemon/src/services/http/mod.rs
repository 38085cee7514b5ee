//! # Layout
//! HTTP boot on the VIP (DESIGN.md sections 3 and 8): every artifact at
//! `http://VIP[:port]/NAME`, and iPXE scripts rendered from boot profiles.
//! Leader only, like DHCP and TFTP: started last in transition step 4.
//!
//! ```text
//!   accept ──▶ conn: caps (total, per client) ──▶ hyper HTTP/1 (header-read
//!              timeout, header limits) + idle watchdog
//!                 └──▶ gate: GET/HEAD only (405), no bodies (413), count code
//!                        └──▶ routes: /boot/MAC.ipxe, /boot/profile/NAME.ipxe ─▶ script
//!                                     /NAME                                   ─▶ files
//! ```
//!
//! - `conn`: the accept loop and the per-connection bounds ([`Limits`]).
//! - `files`: an artifact answer: `ETag`, `If-None-Match` (304), one range (206,
//!   416), the body streamed from the file.
//! - `script`: iPXE scripts rendered from [`BootProfile`]s with minijinja.
//! - `dir`: [`DirLookup`], artifacts found by name in a directory (the
//!   node's `artifact_dir`), hashed once per file version.
//!
//! Who may call: anyone on the LAN (it is the boot server), bounded: at most
//! [`Limits::max_connections`] connections, [`Limits::max_per_client`] per
//! source address, headers within [`Limits::header_timeout`] and 8 KiB / 64
//! lines, no progress for [`Limits::idle_timeout`] closes, and no request
//! bodies. Every answer is counted in `tandem_http_requests_total{code}`
//! (a connection refused at the cap counts as a 503). Logs: `tandem::http`.

mod conn;
mod dir;
mod files;
mod script;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use conn::Limits;
pub use dir::DirLookup;
pub use script::{profile_script_path, reservation_script_path};

use super::artifacts::ArtifactLookup;
use crate::consensus::ClusterHandle;
use crate::model::{BootProfile, Mac};
use conn::Peer;

/// The URL base clients reach this server at: `http://IP` with `:port`
/// unless it is 80. The DHCP replies and the rendered scripts use it.
#[must_use]
pub fn base_url(ip: IpAddr, port: u16) -> String {
    if port == 80 {
        format!("http://{ip}")
    } else {
        format!("http://{ip}:{port}")
    }
}

/// An artifact name's URL on this server (`base/NAME`); a URL stays as it is.
#[must_use]
pub fn artifact_url(base: &str, name: &str) -> String {
    script::resolve(base, name)
}

/// Serves on `listener` until `cancel` fires; then every open connection
/// is dropped at once (a node that stepped down stays silent). The caller
/// binds it (the transition's step 3, before the gratuitous ARP).
pub async fn serve_listener<C: ClusterHandle>(
    listener: TcpListener,
    limits: Limits,
    cluster: C,
    artifacts: Arc<dyn ArtifactLookup>,
    cancel: CancellationToken,
) {
    let local = listener.local_addr().ok();
    let base = local.map_or_else(String::new, |a| base_url(a.ip(), a.port()));
    tracing::info!(target: "tandem::http", addr = ?local, "HTTP boot server started");
    let router = router(Served {
        cluster,
        artifacts,
        scripts: Arc::new(script::Scripts::new()),
        base: base.into(),
    });
    conn::run(listener, limits, router, cancel).await;
    tracing::info!(target: "tandem::http", "HTTP boot server stopped");
}

/// What the routes read.
struct Served<C> {
    cluster: C,
    artifacts: Arc<dyn ArtifactLookup>,
    scripts: Arc<script::Scripts>,
    base: Arc<str>,
}

impl<C: Clone> Clone for Served<C> {
    fn clone(&self) -> Self {
        Served {
            cluster: self.cluster.clone(),
            artifacts: self.artifacts.clone(),
            scripts: self.scripts.clone(),
            base: self.base.clone(),
        }
    }
}

fn router<C: ClusterHandle>(st: Served<C>) -> Router {
    // `get` also answers HEAD; any other method on a route is a 405 with
    // `Allow`. Static segments win over the catch-all, so `/boot/...` is
    // never looked up as an artifact.
    Router::new()
        .route("/boot/profile/{file}", get(profile_script::<C>))
        .route("/boot/{file}", get(mac_script::<C>))
        .route("/{*name}", get(artifact::<C>))
        .with_state(st)
}

async fn artifact<C: ClusterHandle>(
    State(st): State<Served<C>>,
    Path(name): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if !files::safe_name(&name) {
        return files::not_found();
    }
    // A lookup may hash a file or read an index: off the async threads.
    let arts = st.artifacts.clone();
    let Ok(Some(meta)) = tokio::task::spawn_blocking(move || arts.lookup(&name)).await else {
        return files::not_found();
    };
    files::respond(&meta, &headers, method == Method::HEAD).await
}

/// `/boot/profile/NAME.ipxe`: the profile's script.
async fn profile_script<C: ClusterHandle>(
    State(st): State<Served<C>>,
    Path(file): Path<String>,
) -> Response {
    let Some(name) = file.strip_suffix(".ipxe") else {
        return files::not_found();
    };
    let profile = st.cluster.read(|s| s.config.profile(name).cloned());
    render(&st, profile.as_ref(), None)
}

/// `/boot/MAC.ipxe` (MAC as iPXE's `${mac}`): the script of the profile of
/// the MAC's reservation, else of the subnet the client is in.
async fn mac_script<C: ClusterHandle>(
    State(st): State<Served<C>>,
    Extension(Peer(peer)): Extension<Peer>,
    Path(file): Path<String>,
) -> Response {
    let Some(mac) = file
        .strip_suffix(".ipxe")
        .and_then(|m| m.parse::<Mac>().ok())
    else {
        return files::not_found();
    };
    let profile = st.cluster.read(|s| {
        let c = &s.config;
        let name = c
            .reservation_for(mac)
            .and_then(|r| r.profile.as_deref())
            .or_else(|| match peer.ip() {
                IpAddr::V4(ip) => c.subnet_for(ip).and_then(|s| s.profile.as_deref()),
                IpAddr::V6(_) => None,
            })?;
        c.profile(name).cloned()
    });
    render(&st, profile.as_ref(), Some(mac))
}

fn render<C>(st: &Served<C>, profile: Option<&BootProfile>, mac: Option<Mac>) -> Response {
    let Some(p) = profile else {
        return files::not_found();
    };
    match st.scripts.render(p, &st.base, mac) {
        Some(Ok(text)) => (
            StatusCode::OK,
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        // A profile without a kernel has no script to render.
        None => files::not_found(),
        Some(Err(e)) => {
            tracing::error!(target: "tandem::http", profile = %p.name, error = %e, "cannot render iPXE script");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
