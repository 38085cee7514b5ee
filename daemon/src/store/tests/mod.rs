//! Store tests: openraft's conformance suite, restart, crash consistency,
//! corruption detection, and the incremental lease rows staying equal to the
//! in-memory state.

mod conformance;
mod consistency;
mod corruption;
mod crash;
mod restart;

use std::net::Ipv4Addr;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::type_config::alias::{EntryOf, LogIdOf};
use openraft::type_config::TypeConfigExt;

use super::{LogStore, StateMachine};
use crate::model::{Command, CommandResponse, Lease, LeaseState, Mac};

openraft::declare_raft_types!(
    /// The store's own test type config: the store is generic and does not
    /// know the one consensus declares.
    pub TestTypes:
        D = Command,
        R = CommandResponse,
        NodeId = u64,
        Node = crate::model::NodeInfo,
);

type C = TestTypes;

/// Log id of `index` proposed by node 1 in `term`.
fn lid(term: u64, index: u64) -> LogIdOf<C> {
    openraft::testing::log_id::<C>(term, 1, index)
}

fn lease(ip: Ipv4Addr, mac: u8, at: u64) -> Lease {
    Lease {
        ip,
        mac: Mac([2, 0, 0, 0, 0, mac]),
        state: LeaseState::Bound,
        hostname: Some(format!("host-{mac}")),
        granted_at: at,
        expires_at: at + 600,
    }
}

fn grant(term: u64, index: u64, ip: Ipv4Addr, mac: u8) -> EntryOf<C> {
    EntryOf::<C>::new_normal(
        lid(term, index),
        Command::Grant {
            lease: lease(ip, mac, index),
        },
    )
}

/// Appends and waits for the flush callback, like `RaftCore` does.
async fn append(ls: &mut LogStore<C>, entries: Vec<EntryOf<C>>) {
    let (tx, rx) = C::oneshot();
    ls.append(entries, IOFlushed::signal(tx))
        .await
        .expect("append");
    rx.await.expect("callback dropped").expect("flush failed");
}

/// Applies entries with no client waiting, like a follower does.
async fn apply(sm: &mut StateMachine<C>, entries: Vec<EntryOf<C>>) {
    let items = entries.into_iter().map(|e| Ok((e, None)));
    sm.apply(futures::stream::iter(items)).await.expect("apply");
}
