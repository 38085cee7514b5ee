//! The lease rows written incrementally by `apply` always equal the
//! in-memory state, and a snapshot carries the whole state to another node.

use std::net::Ipv4Addr;

use openraft::entry::RaftEntry;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::type_config::alias::EntryOf;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redb::ReadableDatabase;

use super::{append, apply, lease, lid, C};
use crate::model::{BootpPolicy, Command, LeaseState, Mac, ServiceConfig, State};
use crate::store::rows::load_applied;
use crate::store::Store;

/// A random command over a small pool (16 addresses, 24 clients), so
/// grants collide, clients move, and releases and declines hit live leases;
/// and over a small artifact index (6 names, 4 blobs, 3 nodes), so names
/// move between blobs, blobs lose their last name, and holders come and go.
fn random_command(rng: &mut StdRng, at: u64) -> Command {
    let ip = Ipv4Addr::new(10, 0, 0, rng.random_range(1..=16));
    let mac: u8 = rng.random_range(1..=24);
    let name = format!("boot/file-{}", rng.random_range(0..6));
    let sha = ["a", "b", "c", "d"][rng.random_range(0..4)].repeat(64);
    match rng.random_range(0..130) {
        100..=109 => Command::PutArtifact {
            name,
            sha256: sha,
            size: at,
            at,
        },
        110..=114 => Command::RemoveArtifact { name },
        115..=129 => Command::ArtifactHeld {
            node: rng.random_range(1..=3),
            sha256: sha,
            held: rng.random_bool(0.7),
        },
        0..=69 => {
            let mut l = lease(ip, mac, at);
            l.expires_at = at + rng.random_range(1..40);
            Command::Grant { lease: l }
        }
        70..=84 => Command::Release { ip, at },
        85..=97 => Command::Decline {
            ip,
            mac: Mac([2, 0, 0, 0, 0, mac]),
            at,
            until: at + 30,
        },
        _ => Command::SetConfig {
            config: ServiceConfig {
                bootp: if rng.random_bool(0.5) {
                    BootpPolicy::Dynamic
                } else {
                    BootpPolicy::ReservationsOnly
                },
                ..ServiceConfig::default()
            },
        },
    }
}

fn stored_state(store: &Store<C>) -> (Option<u64>, State) {
    let txn = store.db.begin_read().unwrap();
    let a = load_applied::<C>(&txn).unwrap();
    (a.log_id.map(|l| l.index), a.state)
}

/// Compares what the store owns: config and lease rows. (`State`'s derived
/// by-MAC index is rebuilt by `reindex()` on load, so it is the model's
/// business whether its incremental upkeep matches that rebuild.)
fn assert_same_state(what: &str, a: &State, b: &State) {
    assert_eq!(a.config, b.config, "{what}: configs differ");
    assert_eq!(a.leases, b.leases, "{what}: leases differ");
    assert_eq!(a.artifacts, b.artifacts, "{what}: artifact index differs");
    assert_eq!(a.holders, b.holders, "{what}: holders differ");
}

#[tokio::test]
async fn apply_then_reload_matches_memory() {
    for seed in 0..8u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::<C>::open(dir.path()).unwrap();
        let mut ls = store.log_store();
        let mut sm = store.state_machine();
        let mut reference = State::default();
        let mut index = 0;
        let mut saw_holders = false;
        for _batch in 0..40 {
            let n = rng.random_range(1..=12);
            let entries: Vec<EntryOf<C>> = (0..n)
                .map(|_| {
                    index += 1;
                    // Time moves a little per entry, so leases expire and are reused.
                    let cmd = random_command(&mut rng, index * 2);
                    reference.apply(&cmd);
                    EntryOf::<C>::new_normal(lid(1, index), cmd)
                })
                .collect();
            append(&mut ls, entries.clone()).await;
            apply(&mut sm, entries).await;

            saw_holders |= !reference.holders.is_empty();
            let memory = store.view().read(State::clone);
            assert_same_state(
                &format!("seed {seed} index {index}: view vs reference"),
                &memory,
                &reference,
            );
            let (applied, stored) = stored_state(&store);
            assert_eq!(applied, Some(index));
            assert_same_state(
                &format!("seed {seed} index {index}: redb vs view"),
                &stored,
                &memory,
            );
        }
        assert!(
            reference
                .leases
                .values()
                .any(|l| l.state == LeaseState::Declined),
            "seed {seed} never declined"
        );
        assert!(saw_holders, "seed {seed} never had a held artifact");
    }
}

#[tokio::test]
async fn snapshot_installs_the_whole_state_on_another_store() {
    let mut rng = StdRng::seed_from_u64(42);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Store::<C>::open(dir_a.path()).unwrap();
    let b = Store::<C>::open(dir_b.path()).unwrap();
    let (mut ls_a, mut sm_a) = (a.log_store(), a.state_machine());
    let mut sm_b = b.state_machine();

    let entries: Vec<EntryOf<C>> = (1..=200)
        .map(|i| EntryOf::<C>::new_normal(lid(2, i), random_command(&mut rng, i)))
        .collect();
    append(&mut ls_a, entries.clone()).await;
    apply(&mut sm_a, entries).await;
    // B holds stale leases that the snapshot must replace, not merge with.
    let stale: Vec<EntryOf<C>> = (1..=5)
        .map(|i| {
            EntryOf::<C>::new_normal(
                lid(1, i),
                Command::Grant {
                    lease: lease(Ipv4Addr::new(192, 168, 0, i as u8), 99, 1),
                },
            )
        })
        .collect();
    apply(&mut sm_b, stale).await;

    let snap = sm_a
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    assert_eq!(snap.meta.last_log_id, Some(lid(2, 200)));
    sm_b.install_snapshot(&snap.meta, snap.snapshot.clone())
        .await
        .unwrap();

    let state_a = a.view().read(State::clone);
    assert!(
        !state_a.artifacts.is_empty() && !state_a.holders.is_empty(),
        "the snapshot carries artifacts and holders"
    );
    assert_same_state("B's view vs A", &b.view().read(State::clone), &state_a);
    assert_eq!(b.view().applied_index(), Some(200));
    let (applied, stored) = stored_state(&b);
    assert_eq!(applied, Some(200));
    assert_same_state("B's tables vs A", &stored, &state_a);
    assert_eq!(
        sm_b.get_current_snapshot().await.unwrap().unwrap().meta,
        snap.meta
    );

    // A snapshot whose content does not match its meta is refused.
    let mut wrong = snap.meta.clone();
    wrong.last_log_id = Some(lid(2, 199));
    assert!(sm_b
        .install_snapshot(&wrong, snap.snapshot.clone())
        .await
        .is_err());
    // So is damaged data.
    let mut bad = snap.snapshot.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xFF;
    assert!(sm_b.install_snapshot(&snap.meta, bad).await.is_err());
    assert_same_state(
        "B unchanged after refused installs",
        &b.view().read(State::clone),
        &state_a,
    );
}
