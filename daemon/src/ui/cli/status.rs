//! `tandem status`: this node's view of the cluster.

use super::output::{Done, Out};
use super::reach::Reach;
use crate::api::dto::StatusDto;

/// `tandem status`: `GET /v1/status` of the first node that answers.
pub fn run(r: &Reach, out: Out) -> Done {
    let s: StatusDto = r.read("/v1/status")?;
    out.show(&s, print_status);
    Ok(())
}

fn print_status(s: &StatusDto) {
    println!(
        "node {}  role {}  term {}  leader {}",
        s.node_id,
        s.role,
        s.term,
        s.leader.map_or("none".into(), |l| l.to_string())
    );
    println!(
        "log {}  applied {}  vip {} {}  serving {}",
        s.last_log_index.map_or("-".into(), |i| i.to_string()),
        s.applied_index.map_or("-".into(), |i| i.to_string()),
        s.vip,
        if s.vip_held {
            "(held here)"
        } else {
            "(not here)"
        },
        if s.serving { "yes" } else { "no" }
    );
    println!(
        "{:<4} {:<22} {:<22} {:<9} {:>6} {:>9}",
        "ID", "RAFT", "API", "ROLE", "LAG", "LAST ACK"
    );
    for m in &s.members {
        let lag = m.lag_entries.map_or("-".into(), |l| l.to_string());
        let ack = m.silence_ms.map_or("-".into(), |ms| format!("{ms} ms"));
        println!(
            "{:<4} {:<22} {:<22} {:<9} {:>6} {:>9}",
            m.id, m.raft, m.api, m.role, lag, ack
        );
    }
    for w in &s.warnings {
        println!("warning: {w}");
    }
}
