//! # Layout
//! The cluster's trust material (DESIGN.md section 10): who may speak Raft
//! and who may change the cluster through its API. No sockets here: the
//! material and the rustls configs built from it; consensus and the API use them.
//!
//! - `error`: [`TrustError`].
//! - `ca`: the cluster CA (rcgen), node certificates and CSR signing, and the
//!   files under `<data_dir>/tls/` (dir 0700, files 0600).
//! - `token`: the admin token file (`<data_dir>/admin.token`, 0600), join
//!   tokens (`tdm1.<secret>.<CA fingerprint>`, kubeadm style) and TTLs.
//! - `tls`: rustls configs, TLS 1.3 only, ring provider: Raft's mutual TLS
//!   (both verifiers check the chain to the cluster CA, the peer's node id and
//!   the replicated revocation list), the API server and its clients.
//!
//! Who holds the CA key: every member. The founding node creates the CA; a
//! joiner receives the CA key (with its signed certificate and the admin
//! token) in the answer to its enrollment, over TLS that it verified against
//! the CA its join token pins. So any leader can sign a joiner, also after
//! the founder is gone. This widens nothing: a member's certificate already
//! lets it write anything into the replicated state, so a stolen node is the
//! whole cluster either way; a removed node's certificate is revoked by node
//! id in the replicated state, and a removed id is never admitted again.
//!
//! ```text
//!  first start, empty data dir ─▶ ca::ensure: CA + node cert, admin token
//!  member:  tandem cluster token ─▶ Command::AddJoinToken{hash(secret), expires}
//!  joiner:  GET /v1/cluster/ca (unverified) ─▶ sha256(DER) == token's pin?
//!           POST /v1/cluster/enroll {secret, CSR} (verified against that CA)
//!  leader:  sign CSR ─▶ Command::UseJoinToken (one-time, through Raft)
//!           ─▶ {cert, CA, CA key, admin token} ─▶ joiner writes tls/, then joins
//! ```

pub mod ca;
mod error;
pub mod tls;
pub mod token;

pub use ca::{Material, TLS_DIR};
pub use error::TrustError;
pub use token::{JoinToken, ADMIN_TOKEN_FILE};
