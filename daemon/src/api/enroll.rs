//! The joiner's half of `tandem cluster join ADDR --token T` (blocking; the
//! handler runs it off the async workers):
//!
//! ```text
//!  GET  ADDR/v1/cluster/ca      unverified TLS: we do not know the CA yet
//!       sha256(CA DER) == token's fingerprint?  else refuse (wrong cluster, or a man in the middle)
//!  new key + CSR
//!  POST ADDR/v1/cluster/enroll  verified against that CA (followers redirect to the leader)
//!       {id, raft, api, secret, CSR} ─▶ {cert, CA, CA key, admin token}
//!  write <data_dir>/tls/ and admin.token: the next epoch runs with them
//! ```

use std::path::Path;

use super::client::{Access, Client, ClientError};
use super::dto::{CaDto, EnrollDto, EnrolledDto};
use crate::trust::{ca, token, JoinToken, Material};

/// Why enrollment failed: an HTTP status for the local caller, and the message.
#[derive(Debug)]
pub struct EnrollError {
    pub status: u16,
    pub message: String,
}

fn fail(status: u16, message: impl Into<String>) -> EnrollError {
    EnrollError {
        status,
        message: message.into(),
    }
}

fn remote(addr: &str, e: &ClientError) -> EnrollError {
    match e {
        ClientError::Failed {
            status, message, ..
        } if *status == 401 || *status == 403 => fail(
            403,
            format!("the cluster at {addr} refused the join: {message}"),
        ),
        ClientError::Failed { message, .. } => fail(
            409,
            format!("the cluster at {addr} refused the join: {message}"),
        ),
        other => fail(502, format!("cannot enroll at {addr}: {other}")),
    }
}

/// Enrolls this node (`me`, whose `secret` and `csr_pem` are filled in
/// here) with the cluster at `addr`, and writes what it hands back into
/// `data_dir`. On any error nothing is written.
pub fn enroll(
    addr: &str,
    join: &JoinToken,
    mut me: EnrollDto,
    data_dir: &Path,
) -> Result<(), EnrollError> {
    let insecure = Access {
        insecure: true,
        ..Access::default()
    };
    let ca_dto: CaDto = Client::new(addr, &insecure)
        .get("/v1/cluster/ca")
        .map_err(|e| remote(addr, &e))?;
    let fp = ca::fingerprint(&ca_dto.ca_pem)
        .map_err(|e| fail(502, format!("{addr} sent no usable CA certificate: {e}")))?;
    if !token::ct_eq(fp.as_bytes(), join.ca_fingerprint.as_bytes()) {
        return Err(fail(
            403,
            format!(
                "CA fingerprint mismatch: {addr} presents a CA with sha256 {fp}, but the join \
                 token pins {}; refusing to join (wrong cluster, or someone in between)",
                join.ca_fingerprint
            ),
        ));
    }
    let (key_pem, csr_pem) = ca::new_key_and_csr(me.id).map_err(|e| fail(500, e.to_string()))?;
    me.secret.clone_from(&join.secret);
    me.csr_pem = csr_pem;
    let pinned = Access {
        ca_pem: Some(ca_dto.ca_pem.clone()),
        ..Access::default()
    };
    let got: EnrolledDto = Client::new(addr, &pinned)
        .post("/v1/cluster/enroll", &me)
        .map_err(|e| remote(addr, &e))?;
    if ca::fingerprint(&got.ca_pem).ok().as_deref() != Some(fp.as_str()) {
        return Err(fail(
            502,
            format!("{addr} answered with another CA than it presented"),
        ));
    }
    let m = Material {
        ca_pem: got.ca_pem,
        ca_key_pem: Some(got.ca_key_pem),
        cert_pem: got.cert_pem,
        key_pem,
    };
    // The admin token first: tls/ is what marks the new membership.
    token::write_admin_token(data_dir, &got.admin_token).map_err(|e| fail(500, e.to_string()))?;
    ca::write(data_dir, &m).map_err(|e| fail(500, e.to_string()))?;
    tracing::info!(target: "tandem::trust", cluster = %addr, fingerprint = %fp, "enrolled: this node's certificate is signed by the cluster CA");
    Ok(())
}
