//! A blocking client for the admin API, used by the CLI. Maps failures onto
//! the exit-code contract: [`ClientError::Unreachable`] and
//! [`ClientError::NoLeader`] are exit 3, the rest exit 1.

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
    #[error("{status}: {message}")]
    Failed { status: u16, message: String },
    #[error("unexpected answer from {url}: {message}")]
    Protocol { url: String, message: String },
}

pub struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    #[must_use]
    pub fn new(base: &str) -> Client {
        let base = if base.starts_with("http://") || base.starts_with("https://") {
            base.trim_end_matches('/').to_owned()
        } else {
            format!("http://{}", base.trim_end_matches('/'))
        };
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(15)))
            .build()
            .into();
        Client { base, agent }
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
        let message =
            serde_json::from_str::<ErrorDto>(&body).map_or(body, |e| match e.leader_api {
                Some(l) => format!("{} (leader API: {l})", e.error),
                None => e.error,
            });
        if status == 503 || status == 421 {
            return Err(ClientError::NoLeader(message));
        }
        Err(ClientError::Failed { status, message })
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = self.url(path);
        let r = self.agent.get(&url).call();
        Self::finish(&url, r)
    }

    pub fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let url = self.url(path);
        let mut resp = self
            .agent
            .get(&url)
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
                ("PUT", Some(b)) => self.agent.put(&url).send_json(b),
                ("POST", Some(b)) => self.agent.post(&url).send_json(b),
                ("DELETE", _) => self.agent.delete(&url).call(),
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
                        Some(leader) if format!("http://{leader}") == base => {
                            return Err(ClientError::NoLeader(format!(
                                "{url}: the leader cannot reach a quorum"
                            )));
                        }
                        Some(leader) => base = format!("http://{leader}"),
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
