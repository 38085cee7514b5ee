//! What the store needs of a Raft type config. The store is generic over it,
//! as openraft's own `examples/sm-mem` and `log-mem` are, so it does not
//! depend on the one `declare_raft_types!` that consensus makes: the log
//! carries [`Command`]s, applying one answers a [`CommandResponse`], and log
//! ids name their term (log lines carry `term=`, DESIGN.md section 6).

use openraft::impls::leader_id_adv::LeaderId;
use openraft::impls::Entry;
use openraft::EntryPayload;
use openraft::RaftTypeConfig;

use crate::model::{Command, CommandResponse, NodeInfo};

/// Any Raft type config whose log is tandem's; `consensus::TypeConfig` is
/// the one the daemon runs, and the store's tests declare their own.
pub trait StoreTypes:
    RaftTypeConfig<
    D = Command,
    R = CommandResponse,
    NodeId = u64,
    Term = u64,
    LeaderId = LeaderId<u64, u64>,
    Node = NodeInfo,
    Entry = Entry<LeaderId<u64, u64>, EntryPayload<Command, u64, NodeInfo>>,
>
{
}

impl<C> StoreTypes for C where
    C: RaftTypeConfig<
        D = Command,
        R = CommandResponse,
        NodeId = u64,
        Term = u64,
        LeaderId = LeaderId<u64, u64>,
        Node = NodeInfo,
        Entry = Entry<LeaderId<u64, u64>, EntryPayload<Command, u64, NodeInfo>>,
    >
{
}
