//! A blocking client for the admin API, used by the CLI and node-to-node
//! calls (join, leave). HTTPS only: the server must chain to the cluster CA
//! ([`Access::ca_pem`]); requests carry the admin token as a bearer token
//! when one is known. Maps failures onto the exit-code contract:
//! [`ClientError::Unreachable`] and [`ClientError::NoLeader`] are exit 3,
//! the rest exit 1.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::dto::ErrorDto;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("no leader: {0}")]
    NoLeader(String),
    /// The server answered with an error; `hint` is what it says to do.
    #[error("{status}: {message}")]
    Failed {
        status: u16,
        message: String,
        hint: Option<String>,
    },
    #[error("unexpected answer from {url}: {message}")]
    Protocol { url: String, message: String },
}

/// What a client trusts and what it presents.
#[derive(Clone, Default)]
pub struct Access {
    /// PEM of the cluster CA that the server's certificate must chain to.
    /// Without one (and without `insecure`) no server is trusted.
    pub ca_pem: Option<String>,
    /// The admin token, sent as `Authorization: Bearer`.
    pub token: Option<String>,
    /// Trust any server. Only for fetching a CA certificate whose
    /// fingerprint is checked against a join token right after.
    pub insecure: bool,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("ca", &self.ca_pem.is_some())
            .field("token", &self.token.is_some())
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl Access {
    /// A member's own: `<data_dir>/tls/ca.pem` and `<data_dir>/admin.token`,
    /// each if readable.
    #[must_use]
    pub fn local(data_dir: &Path) -> Access {
        Access {
            ca_pem: std::fs::read_to_string(crate::trust::ca::ca_path(data_dir)).ok(),
            token: crate::trust::token::read_admin_token(&crate::trust::token::admin_token_path(
                data_dir,
            ))
            .ok(),
            insecure: false,
        }
    }
}

/// `host:port` or a URL, as an `https://` base without a trailing slash.
#[must_use]
pub fn base_url(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.trim_end_matches('/').to_owned()
    } else {
        format!("https://{}", addr.trim_end_matches('/'))
    }
}

/// How long one API call may take at most.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long connecting may take: a LAN peer answers in milliseconds, and a
/// host that is down should not hold up the next one for long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What bounds a client's calls.
#[derive(Clone, Copy)]
enum Bound {
    /// The whole call, connect included.
    Call(Duration),
    /// Connecting, and each read or write, not the whole transfer.
    Transfer,
}

pub struct Client {
    base: String,
    agent: ureq::Agent,
    token: Option<String>,
    /// Kept for the clients this one makes (redirects, uploads to the leader).
    access: Access,
}

impl Client {
    #[must_use]
    pub fn new(base: &str, access: &Access) -> Client {
        Client::build(base, access, Bound::Call(CALL_TIMEOUT))
    }

    /// A client whose every call ends within `timeout` (at most
    /// [`CALL_TIMEOUT`]), connecting within [`CONNECT_TIMEOUT`], so that the
    /// CLI's `--timeout` bounds a whole retried call and a dead host does not
    /// use up the budget of the nodes after it.
    #[must_use]
    pub fn with_timeout(base: &str, access: &Access, timeout: Duration) -> Client {
        Client::build(base, access, Bound::Call(timeout.min(CALL_TIMEOUT)))
    }

    /// A client for long transfers: no overall deadline (a 1 GiB artifact
    /// takes a while), but a connection that stalls for 30 s fails.
    #[must_use]
    pub fn for_transfers(base: &str, access: &Access) -> Client {
        Client::build(base, access, Bound::Transfer)
    }

    /// The base URL this client talks to (`https://host:port`).
    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    fn build(base: &str, access: &Access, bound: Bound) -> Client {
        let base = base_url(base);
        let mut tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(crate::trust::tls::provider());
        if access.insecure {
            tls = tls.disable_verification(true);
        } else {
            let roots: Vec<ureq::tls::Certificate<'static>> = access
                .ca_pem
                .as_deref()
                .and_then(|p| ureq::tls::Certificate::from_pem(p.as_bytes()).ok())
                .into_iter()
                .collect();
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)));
        }
        let cfg = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls.build());
        let cfg = match bound {
            Bound::Transfer => cfg
                .timeout_connect(Some(Duration::from_secs(5)))
                .timeout_per_read(Some(Duration::from_secs(30)))
                .timeout_per_write(Some(Duration::from_secs(30))),
            Bound::Call(t) => cfg
                .timeout_global(Some(t))
                .timeout_connect(Some(t.min(CONNECT_TIMEOUT))),
        };
        Client {
            base,
            agent: cfg.build().into(),
            token: access.token.clone(),
            access: access.clone(),
        }
    }

    fn auth<B>(&self, r: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => r.header("Authorization", format!("Bearer {t}")),
            None => r,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn finish<T: DeserializeOwned>(
        url: &str,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T, ClientError> {
        let mut resp = r.map_err(|e| ClientError::Unreachable {
            url: url.to_owned(),
            message: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| ClientError::Protocol {
                url: url.to_owned(),
                message: e.to_string(),
            })?;
        if (200..300).contains(&status) {
            return serde_json::from_str(&body).map_err(|e| ClientError::Protocol {
                url: url.to_owned(),
                message: e.to_string(),
            });
        }
        let (message, hint) = serde_json::from_str::<ErrorDto>(&body).map_or((body, None), |e| {
            let m = match e.leader_api {
                Some(l) => format!("{} (leader API: {l})", e.error),
                None => e.error,
            };
            (m, e.hint)
        });
        if status == 503 || status == 421 {
            return Err(ClientError::NoLeader(message));
        }
        Err(ClientError::Failed {
            status,
            message,
            hint,
        })
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = self.url(path);
        let r = self.auth(self.agent.get(&url)).call();
        Self::finish(&url, r)
    }

    pub fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let url = self.url(path);
        let mut resp =
            self.auth(self.agent.get(&url))
                .call()
                .map_err(|e| ClientError::Unreachable {
                    url: url.clone(),
                    message: e.to_string(),
                })?;
        resp.body_mut()
            .read_to_string()
            .map_err(|e| ClientError::Protocol {
                url,
                message: e.to_string(),
            })
    }

    pub fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.write("PUT", path, Some(body))
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.write("POST", path, Some(body))
    }

    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.write::<(), T>("DELETE", path, None)
    }

    /// A write: sent to this node; a follower answers 421 with the leader's
    /// API address, and the write is sent there once.
    fn write<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let mut base = self.base.clone();
        for _ in 0..2 {
            let url = format!("{base}{path}");
            let r = match (method, body) {
                ("PUT", Some(b)) => self.auth(self.agent.put(&url)).send_json(b),
                ("POST", Some(b)) => self.auth(self.agent.post(&url)).send_json(b),
                ("DELETE", _) => self.auth(self.agent.delete(&url)).call(),
                _ => unreachable!("write() is called with PUT/POST and a body, or DELETE"),
            };
            match r {
                Ok(resp) if resp.status().as_u16() == 421 => {
                    let mut resp = resp;
                    let text = resp.body_mut().read_to_string().unwrap_or_default();
                    match serde_json::from_str::<ErrorDto>(&text)
                        .ok()
                        .and_then(|e| e.leader_api)
                    {
                        // A node that names itself as leader but cannot commit has no quorum.
                        Some(leader) if base_url(&leader) == base => {
                            return Err(ClientError::NoLeader(format!(
                                "{url}: the leader cannot reach a quorum"
                            )));
                        }
                        Some(leader) => base = base_url(&leader),
                        None => {
                            return Err(ClientError::NoLeader(format!(
                                "{url}: not the leader, and no leader known"
                            )))
                        }
                    }
                }
                other => return Self::finish(&url, other),
            }
        }
        Err(ClientError::NoLeader(
            "leadership moved while redirecting; retry".into(),
        ))
    }
}

/// How `put_file` and the artifact transport send one request: every
/// artifact call goes through [`Client::send`], so another transport (TLS,
/// bearer tokens) changes one place.
#[derive(Clone, Copy)]
pub enum SendBody<'a> {
    None,
    Json(&'a dyn erased::Json),
    File(&'a std::fs::File),
}

/// Object-safe JSON bodies for [`SendBody`].
pub mod erased {
    pub trait Json {
        fn to_json(&self) -> Result<Vec<u8>, serde_json::Error>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
            serde_json::to_vec(self)
        }
    }
}

impl Client {
    /// Sends one request to `self.base + path`. The one place artifact
    /// calls reach the network.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: SendBody<'_>,
    ) -> Result<ureq::http::Response<ureq::Body>, ClientError> {
        let url = self.url(path);
        let unreachable = |e: ureq::Error| ClientError::Unreachable {
            url: url.clone(),
            message: e.to_string(),
        };
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let r = match body {
            SendBody::None => {
                let req = req.body(()).map_err(|e| ClientError::Protocol {
                    url: url.clone(),
                    message: e.to_string(),
                })?;
                self.agent.run(req)
            }
            SendBody::Json(j) => {
                let bytes = j.to_json().map_err(|e| ClientError::Protocol {
                    url: url.clone(),
                    message: e.to_string(),
                })?;
                let req = req
                    .header("content-type", "application/json")
                    .body(bytes)
                    .map_err(|e| ClientError::Protocol {
                        url: url.clone(),
                        message: e.to_string(),
                    })?;
                self.agent.run(req)
            }
            SendBody::File(f) => {
                let req = req.body(f).map_err(|e| ClientError::Protocol {
                    url: url.clone(),
                    message: e.to_string(),
                })?;
                self.agent.run(req)
            }
        };
        r.map_err(unreachable)
    }

    /// `tandem artifact put`: streams `path` to the leader as `name`. Asks
    /// this node who leads first, so the file is sent once; follows one 421
    /// if leadership moved meanwhile.
    pub fn put_file(
        &self,
        name: &str,
        path: &std::path::Path,
    ) -> Result<super::dto::ArtifactDto, ClientError> {
        let status: super::dto::StatusDto = self.get("/v1/status")?;
        let mut base = if status.role == "leader" {
            self.base.clone()
        } else {
            let leader = status
                .leader
                .and_then(|l| status.members.iter().find(|m| m.id == l))
                .ok_or_else(|| ClientError::NoLeader("no leader known".into()))?;
            base_url(&leader.api)
        };
        let route = format!("/v1/artifacts/{name}");
        for _ in 0..2 {
            let file = std::fs::File::open(path).map_err(|e| ClientError::Failed {
                status: 0,
                message: format!("cannot read {}: {e}", path.display()),
                hint: None,
            })?;
            let c = Client::for_transfers(&base, &self.access);
            let r = c.send("PUT", &route, &[], SendBody::File(&file));
            match r {
                Ok(mut resp) if resp.status().as_u16() == 421 => {
                    let text = resp.body_mut().read_to_string().unwrap_or_default();
                    match serde_json::from_str::<ErrorDto>(&text)
                        .ok()
                        .and_then(|e| e.leader_api)
                    {
                        Some(l) if base_url(&l) != base => base = base_url(&l),
                        _ => return Err(ClientError::NoLeader(text)),
                    }
                }
                other => return Self::finish(&c.url(&route), Ok(other?)),
            }
        }
        Err(ClientError::NoLeader(
            "leadership moved while uploading; retry".into(),
        ))
    }
}

/// The artifact replication's [`Transport`]: the admin API, via
/// [`Client::send`].
#[derive(Clone, Debug)]
pub struct ApiTransport {
    /// The cluster CA and admin token: peers' APIs are HTTPS with tokens.
    pub access: Access,
}

impl crate::services::artifacts::Transport for ApiTransport {
    fn fetch_blob(
        &self,
        api: &str,
        sha256: &str,
        offset: u64,
    ) -> Result<crate::services::artifacts::BlobStream, String> {
        let c = Client::for_transfers(api, &self.access);
        let headers = if offset > 0 {
            vec![("range", format!("bytes={offset}-"))]
        } else {
            vec![]
        };
        let resp = c
            .send(
                "GET",
                &format!("/v1/blobs/{sha256}"),
                &headers,
                SendBody::None,
            )
            .map_err(|e| e.to_string())?;
        let start = match resp.status().as_u16() {
            200 => 0,
            206 => offset,
            s => return Err(format!("{api} answered {s} for blob {sha256}")),
        };
        Ok(crate::services::artifacts::BlobStream {
            start,
            body: Box::new(resp.into_body().into_reader()),
        })
    }

    fn report_held(
        &self,
        leader_api: &str,
        report: &crate::services::artifacts::HeldReport,
    ) -> Result<(), String> {
        let c = Client::new(leader_api, &self.access);
        let url = c.url("/v1/holders");
        let r = c.send("POST", "/v1/holders", &[], SendBody::Json(report));
        let r = r.map_err(|e| e.to_string())?;
        Client::finish::<super::dto::OkDto>(&url, Ok(r))
            .map(drop)
            .map_err(|e| e.to_string())
    }
}
