//! Where the CLI sends its requests and what it presents.
//!
//! - The nodes: `--nodes a,b,c` (API addresses), else `--api`, else the node
//!   config's `api.listen` (so `ssh node tandem …` talks to that node).
//! - The credentials: `--ca`, `--token-file`, `TANDEM_TOKEN`, else the
//!   node's own CA and admin token under its `data_dir`.
//! - [`Reach::call`]: finds the node for a call, orchestrator-client style,
//!   and retries with capped Fibonacci back-off until `--timeout`:
//!
//! ```text
//!   read  ──▶ a ✗ ──▶ b ✓                      the first node that answers
//!   write ──▶ a ✗ ──▶ b: "follower, leader 3" ──▶ 3 ✓   (the leader it names)
//!              all ✗ / no leader ──▶ sleep 1, 1, 2, 3, 5 … s (≤ cap) ──▶ again
//!                                   … until --timeout: exit 3
//! ```
//!
//! Without `--nodes` and `--timeout` a call is one round (as a single
//! node's CLI always was); with `--nodes` the deadline defaults to
//! [`DEFAULT_NODES_TIMEOUT`].

use std::path::Path;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::api::client::{Access, Client, ClientError};
use crate::api::dto::StatusDto;

/// How long a call with `--nodes` and no `--timeout` keeps trying.
pub const DEFAULT_NODES_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest pause between rounds unless `--backoff-cap` says otherwise.
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(30);

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
#[must_use]
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

/// The pause before retry `attempt` (0-based): 1, 1, 2, 3, 5, 8 … seconds,
/// never more than `cap`.
#[must_use]
pub fn fibonacci_backoff(attempt: u32, cap: Duration) -> Duration {
    let (mut a, mut b) = (1u64, 1u64);
    for _ in 0..attempt {
        (a, b) = (b, a.saturating_add(b));
        if a >= cap.as_secs().saturating_add(1) {
            break;
        }
    }
    Duration::from_secs(a).min(cap)
}

/// `--timeout` and `--backoff-cap`: at most a day.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::model::parse_duration(s, Duration::from_secs(86_400))
}

/// Which node a call goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The first node that answers: reads (each node answers from its own
    /// replicated view) and commands about the node itself (join, leave).
    Any,
    /// The leader: every write to the replicated state.
    Leader,
}

/// The nodes a call may use, the credentials, and how long to keep trying.
pub struct Reach {
    nodes: Vec<String>,
    access: Access,
    started: Instant,
    /// `None`: one round, no retries.
    timeout: Option<Duration>,
    cap: Duration,
}

fn retryable(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Unreachable { .. } | ClientError::NoLeader(_)
    )
}

impl Reach {
    /// `nodes` in the order to ask them (not empty).
    #[must_use]
    pub fn new(
        nodes: Vec<String>,
        access: Access,
        timeout: Option<Duration>,
        cap: Duration,
    ) -> Reach {
        Reach {
            nodes,
            access,
            started: Instant::now(),
            timeout,
            cap,
        }
    }

    /// The first node named: where the node's own commands go.
    #[must_use]
    pub fn first(&self) -> &str {
        &self.nodes[0]
    }

    #[must_use]
    pub fn access(&self) -> &Access {
        &self.access
    }

    fn remaining(&self) -> Option<Duration> {
        self.timeout
            .map(|t| t.saturating_sub(self.started.elapsed()))
    }

    /// A client for `node` whose calls end within what is left of the budget.
    fn client(&self, node: &str) -> Client {
        match self.remaining() {
            Some(left) => {
                Client::with_timeout(node, &self.access, left.max(Duration::from_millis(50)))
            }
            None => Client::new(node, &self.access),
        }
    }

    /// Runs `f` on the node `kind` picks; on an unreachable node or no
    /// leader, tries the next node, then sleeps the back-off and starts over
    /// until the deadline. Any other error (the server refused) ends at once.
    pub fn call<T>(
        &self,
        kind: Kind,
        mut f: impl FnMut(&Client) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let mut attempt = 0;
        loop {
            let r = match kind {
                Kind::Any => self.any_round(&mut f),
                Kind::Leader => self.leader_round(&mut f),
            };
            let e = match r {
                Err(e) if retryable(&e) => e,
                other => return other,
            };
            let Some(left) = self.remaining() else {
                return Err(e);
            };
            if left.is_zero() {
                return Err(self.gave_up(e, attempt + 1));
            }
            let pause = fibonacci_backoff(attempt, self.cap).min(left);
            eprintln!("tandem: {e}; trying again in {:.1} s", pause.as_secs_f64());
            std::thread::sleep(pause);
            attempt += 1;
            if self.remaining().is_some_and(|l| l.is_zero()) {
                return Err(self.gave_up(e, attempt));
            }
        }
    }

    fn gave_up(&self, e: ClientError, rounds: u32) -> ClientError {
        let why = format!(
            "gave up after {:.1} s ({rounds} round(s) over {})",
            self.started.elapsed().as_secs_f64(),
            self.nodes.join(", ")
        );
        match e {
            ClientError::Unreachable { url, message } => ClientError::Unreachable {
                url,
                message: format!("{message}; {why}"),
            },
            ClientError::NoLeader(m) => ClientError::NoLeader(format!("{m}; {why}")),
            other => other,
        }
    }

    /// One round of [`Kind::Any`]: each node in turn until one answers.
    fn any_round<T>(
        &self,
        f: &mut impl FnMut(&Client) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let mut last = None;
        for node in &self.nodes {
            match f(&self.client(node)) {
                Err(e @ ClientError::Unreachable { .. }) => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| ClientError::NoLeader("no node given".into())))
    }

    /// One round of [`Kind::Leader`]: asks each node in turn who leads
    /// (`GET /v1/status`, open) and sends the call there; a node that is
    /// down, knows no leader, or names a leader that cannot commit passes
    /// the turn to the next.
    fn leader_round<T>(
        &self,
        f: &mut impl FnMut(&Client) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let mut last = None;
        for node in &self.nodes {
            let c = self.client(node);
            let st: StatusDto = match c.get("/v1/status") {
                Ok(s) => s,
                Err(e) if retryable(&e) => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let leader_api = st
                .leader
                .filter(|&l| l != st.node_id)
                .and_then(|l| st.members.iter().find(|m| m.id == l))
                .map(|m| m.api.clone());
            let target = match (st.role.as_str(), leader_api) {
                ("leader", _) => c,
                (_, Some(api)) => self.client(&api),
                (role, None) => {
                    last = Some(ClientError::NoLeader(format!(
                        "node {} at {node} knows no leader (it is {role})",
                        st.node_id
                    )));
                    continue;
                }
            };
            match f(&target) {
                Err(e) if retryable(&e) => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| ClientError::NoLeader("no node given".into())))
    }

    /// `GET path` from the first node that answers.
    pub fn read<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Kind::Any, |c| c.get(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_is_fibonacci_in_seconds_and_capped() {
        let cap = DEFAULT_BACKOFF_CAP;
        let s: Vec<u64> = (0..12)
            .map(|i| fibonacci_backoff(i, cap).as_secs())
            .collect();
        assert_eq!(s, [1, 1, 2, 3, 5, 8, 13, 21, 30, 30, 30, 30]);
        // A small cap (tests): every pause is the cap.
        let ms = Duration::from_millis(200);
        assert!((0..5).all(|i| fibonacci_backoff(i, ms) == ms));
        // Far out it neither overflows nor passes the cap.
        assert_eq!(fibonacci_backoff(u32::MAX, cap), cap);
        assert_eq!(
            fibonacci_backoff(200, Duration::from_secs(u64::MAX / 2)).as_secs(),
            u64::MAX / 2
        );
    }

    #[test]
    fn durations_take_ms_fractions_and_units_and_refuse_nonsense() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        for bad in ["", "0", "-1s", "1x", "s", "1.2.3s", "48h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn with_no_deadline_a_dead_node_fails_after_one_round() {
        // 127.0.0.1:9 (discard) refuses at once on a host with nothing there.
        let r = Reach::new(
            vec!["127.0.0.1:9".into()],
            Access::default(),
            None,
            DEFAULT_BACKOFF_CAP,
        );
        let t = Instant::now();
        let e = r.read::<StatusDto>("/v1/status").unwrap_err();
        assert!(matches!(e, ClientError::Unreachable { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_deadline_bounds_the_retries() {
        let r = Reach::new(
            vec!["127.0.0.1:9".into(), "127.0.0.1:19".into()],
            Access::default(),
            Some(Duration::from_millis(700)),
            Duration::from_millis(200),
        );
        let t = Instant::now();
        let mut calls = 0;
        let e = r
            .call(Kind::Leader, |c| {
                calls += 1;
                c.get::<StatusDto>("/v1/status")
            })
            .unwrap_err();
        let took = t.elapsed();
        assert!(e.to_string().contains("gave up after"), "{e}");
        assert!(
            took >= Duration::from_millis(600) && took < Duration::from_millis(1500),
            "{took:?}"
        );
        // Nobody answered status, so the call itself never ran.
        assert_eq!(calls, 0);
    }
}
