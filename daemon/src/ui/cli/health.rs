//! `tandem health`: `GET /v1/health` of this node. Exit 0 when it serves,
//! or follows a leader that has a quorum; otherwise exit 3 with its
//! problems. With `--timeout` it keeps asking (a 503 or no answer is
//! retried), so a unit can wait for a good boot:
//! `tandem --timeout 3m --backoff-cap 2s health` (the appliance's boot
//! counting, image/README.md).

use super::output::{Done, Out};
use super::reach::Reach;
use crate::api::dto::HealthDto;

pub fn run(r: &Reach, out: Out) -> Done {
    let h: HealthDto = r.read("/v1/health")?;
    out.show(&h, |h| {
        println!(
            "node {}  role {}  {}",
            h.node_id,
            h.role,
            if h.serving { "serving" } else { "not serving" }
        );
    });
    Ok(())
}
