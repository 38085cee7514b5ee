//! A clean shutdown and reopen brings back the vote, the log, the committed
//! id, the applied point, the leases and the current snapshot.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use openraft::entry::RaftEntry;
use openraft::storage::{RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::alias::{EntryOf, VoteOf};
use openraft::Membership;

use super::{append, apply, grant, lid, C};
use crate::model::{BootpPolicy, Command, Mac, ServiceConfig, State};
use crate::store::Store;

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

#[tokio::test]
async fn vote_log_applied_state_and_snapshot_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let vote = VoteOf::<C>::new_committed(3, 1);
    let membership =
        Membership::<u64, crate::model::NodeInfo>::new_with_defaults(vec![BTreeSet::from([1])], []);

    println!("=== phase: write");
    let mut entries: Vec<EntryOf<C>> = vec![
        EntryOf::<C>::new_blank(lid(1, 1)),
        EntryOf::<C>::new_membership(lid(1, 2), membership.clone()),
    ];
    for i in 3..=10 {
        entries.push(grant(1, i, ip(i as u8), i as u8));
    }
    // Client 3 moves to another address; 4 is released; the config changes.
    entries.push(grant(1, 11, ip(50), 3));
    entries.push(EntryOf::<C>::new_normal(
        lid(1, 12),
        Command::Release { ip: ip(4), at: 20 },
    ));
    let config = ServiceConfig {
        bootp: BootpPolicy::Dynamic,
        ..ServiceConfig::default()
    };
    entries.push(EntryOf::<C>::new_normal(
        lid(1, 13),
        Command::SetConfig {
            config: config.clone(),
        },
    ));
    // Appended but not applied yet.
    entries.push(grant(1, 14, ip(60), 60));
    entries.push(grant(1, 15, ip(61), 61));

    let (expected_state, snapshot_meta) = {
        let store = Store::<C>::open(dir.path()).unwrap();
        let mut ls = store.log_store();
        let mut sm = store.state_machine();
        ls.save_vote(&vote).await.unwrap();
        append(&mut ls, entries[..7].to_vec()).await;
        append(&mut ls, entries[7..].to_vec()).await;
        ls.save_committed(Some(lid(1, 13))).await.unwrap();
        apply(&mut sm, entries[..5].to_vec()).await;
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id, Some(lid(1, 5)));
        apply(&mut sm, entries[5..13].to_vec()).await;

        let view = store.view();
        assert_eq!(view.applied_index(), Some(13));
        let s = view.read(State::clone);
        assert_eq!(s.config, config);
        assert_eq!(s.lease_of_mac(Mac([2, 0, 0, 0, 0, 3])).unwrap().ip, ip(50));
        assert!(
            s.lease_of_ip(ip(3)).is_none(),
            "the moved client's old address is freed"
        );
        assert_eq!(s.lease_of_ip(ip(4)).unwrap().expires_at, 20);
        (s, snap.meta)
        // Everything dropped here: the database closes.
    };

    println!("=== phase: reopen");
    let store = Store::<C>::open(dir.path()).unwrap();
    let mut ls = store.log_store();
    let mut sm = store.state_machine();
    let mut reader = ls.get_log_reader().await;
    assert_eq!(reader.read_vote().await.unwrap(), Some(vote));
    assert_eq!(ls.read_committed().await.unwrap(), Some(lid(1, 13)));
    let state = ls.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id, Some(lid(1, 15)));
    assert_eq!(state.last_purged_log_id, None);
    assert_eq!(reader.try_get_log_entries(1..=15).await.unwrap(), entries);

    let (applied, mem) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(lid(1, 13)));
    assert_eq!(mem.log_id(), &Some(lid(1, 2)));
    assert_eq!(mem.membership(), &membership);

    let view = store.view();
    assert_eq!(view.applied_index(), Some(13));
    let s = view.read(State::clone);
    assert_eq!(s, expected_state);
    // The derived by-MAC index is rebuilt on load.
    for l in expected_state.leases.values() {
        assert_eq!(
            s.lease_of_mac(l.mac).map(|x| x.ip),
            expected_state.lease_of_mac(l.mac).map(|x| x.ip)
        );
    }
    let snap = sm
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("snapshot kept across restart");
    assert_eq!(snap.meta, snapshot_meta);

    println!("=== phase: continue applying after reopen");
    apply(&mut sm, entries[13..].to_vec()).await;
    assert_eq!(view.applied_index(), Some(15));
    assert!(view.read(|s| s.lease_of_ip(ip(61)).is_some()));
}

#[tokio::test]
async fn wait_applied_resolves_only_once_the_index_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::<C>::open(dir.path()).unwrap();
    let mut ls = store.log_store();
    let mut sm = store.state_machine();
    let view = store.view();
    let waiter = tokio::spawn({
        let view = view.clone();
        async move { view.wait_applied(3).await }
    });
    let entries: Vec<_> = (1..=3).map(|i| grant(1, i, ip(i as u8), i as u8)).collect();
    append(&mut ls, entries.clone()).await;
    apply(&mut sm, entries[..2].to_vec()).await;
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "resolved at index 2");
    apply(&mut sm, entries[2..].to_vec()).await;
    tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(
        view.read(|s| s.lease_of_ip(ip(3)).is_some()),
        "the view includes index 3"
    );
}

/// The artifact index and its holders come back from the tables on reopen,
/// and a removal deletes rows rather than leaving them behind.
#[tokio::test]
async fn artifact_index_and_holders_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let sha = |c: &str| c.repeat(64);
    let cmds = vec![
        Command::PutArtifact {
            name: "ipxe.efi".into(),
            sha256: sha("a"),
            size: 1_000,
            at: 5,
        },
        Command::PutArtifact {
            name: "linux/vmlinuz".into(),
            sha256: sha("b"),
            size: 2_000,
            at: 6,
        },
        Command::ArtifactHeld {
            node: 1,
            sha256: sha("a"),
            held: true,
        },
        Command::ArtifactHeld {
            node: 2,
            sha256: sha("a"),
            held: true,
        },
        Command::ArtifactHeld {
            node: 2,
            sha256: sha("b"),
            held: true,
        },
        Command::RemoveArtifact {
            name: "linux/vmlinuz".into(),
        },
        Command::ArtifactHeld {
            node: 1,
            sha256: sha("a"),
            held: false,
        },
    ];
    let entries: Vec<EntryOf<C>> = cmds
        .into_iter()
        .zip(1..)
        .map(|(c, i)| EntryOf::<C>::new_normal(lid(1, i), c))
        .collect();
    println!("=== phase: write");
    let expected = {
        let store = Store::<C>::open(dir.path()).unwrap();
        let (mut ls, mut sm) = (store.log_store(), store.state_machine());
        append(&mut ls, entries.clone()).await;
        // Two batches, so rows written by one are deleted by the next.
        apply(&mut sm, entries[..5].to_vec()).await;
        apply(&mut sm, entries[5..].to_vec()).await;
        store.view().read(State::clone)
    };
    assert_eq!(expected.artifacts.len(), 1);
    assert_eq!(
        expected.holders.get(&sha("a")),
        Some(&BTreeSet::from([2u64]))
    );
    assert!(!expected.holders.contains_key(&sha("b")));
    println!("=== phase: reopen");
    let store = Store::<C>::open(dir.path()).unwrap();
    let s = store.view().read(State::clone);
    assert_eq!(s.artifacts, expected.artifacts);
    assert_eq!(s.holders, expected.holders);
}
