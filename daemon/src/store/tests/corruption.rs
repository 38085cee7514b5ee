//! A value damaged on disk is reported as an error, never served.

use std::io;
use std::net::Ipv4Addr;

use openraft::storage::{RaftLogReader, RaftLogStorage};
use redb::ReadableTable;

use super::{append, apply, grant, C};
use crate::store::{tables, Store, StoreError};

/// Rewrites the stored bytes of `LOG[key]` with `f` applied, through redb
/// directly (so redb's own checksums are valid and only ours can notice).
fn tamper_log(store: &Store<C>, key: u64, f: impl FnOnce(&mut Vec<u8>)) {
    let txn = store.db.begin_write().unwrap();
    {
        let mut t = txn.open_table(tables::LOG).unwrap();
        let mut v = t
            .get(key)
            .unwrap()
            .expect("entry to tamper with")
            .value()
            .to_vec();
        f(&mut v);
        t.insert(key, v.as_slice()).unwrap();
    }
    txn.commit().unwrap();
}

fn is_corruption(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidData
        && e.get_ref()
            .and_then(|s| s.downcast_ref::<StoreError>())
            .is_some_and(|s| matches!(s, StoreError::Corrupt { .. }))
}

#[tokio::test]
async fn a_flipped_byte_in_a_log_entry_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::<C>::open(dir.path()).unwrap();
    let mut ls = store.log_store();
    let entries: Vec<_> = (1..=5)
        .map(|i| grant(1, i, Ipv4Addr::new(10, 0, 0, i as u8), i as u8))
        .collect();
    append(&mut ls, entries.clone()).await;

    // Flip one bit in the middle of entry 3's JSON: still valid UTF-8 and
    // likely still valid JSON, so only the checksum can catch it.
    tamper_log(&store, 3, |v| {
        let mid = v.len() / 2;
        v[mid] ^= 0x01;
    });
    let mut r = ls.get_log_reader().await;
    let err = r
        .try_get_log_entries(1..=5)
        .await
        .expect_err("corrupt entry served");
    assert!(is_corruption(&err), "{err:?}");
    assert!(err.to_string().contains("log entry 3"), "{err}");
    // Entries around it are still readable.
    assert_eq!(r.try_get_log_entries(1..3).await.unwrap(), entries[..2]);
    assert_eq!(r.try_get_log_entries(4..=5).await.unwrap(), entries[3..]);

    // The last entry feeds get_log_state, which must fail too.
    tamper_log(&store, 5, |v| *v.last_mut().unwrap() ^= 0x80);
    let err = ls
        .get_log_state()
        .await
        .expect_err("corrupt last entry served");
    assert!(is_corruption(&err), "{err:?}");
}

#[tokio::test]
async fn an_entry_under_the_wrong_index_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::<C>::open(dir.path()).unwrap();
    let mut ls = store.log_store();
    append(
        &mut ls,
        (1..=3)
            .map(|i| grant(1, i, Ipv4Addr::new(10, 0, 0, i as u8), i as u8))
            .collect(),
    )
    .await;
    // Copy entry 1's intact value over entry 2: the checksum binds the key.
    let one = {
        let txn = store.db.begin_write().unwrap();
        let v = txn
            .open_table(tables::LOG)
            .unwrap()
            .get(1)
            .unwrap()
            .unwrap()
            .value()
            .to_vec();
        txn.abort().unwrap();
        v
    };
    tamper_log(&store, 2, |v| *v = one);
    let err = ls
        .get_log_reader()
        .await
        .try_get_log_entries(..)
        .await
        .expect_err("misplaced entry served");
    assert!(is_corruption(&err), "{err:?}");
}

#[tokio::test]
async fn a_corrupt_lease_row_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::<C>::open(dir.path()).unwrap();
        let mut ls = store.log_store();
        let mut sm = store.state_machine();
        let entries: Vec<_> = (1..=3)
            .map(|i| grant(1, i, Ipv4Addr::new(10, 0, 0, i as u8), i as u8))
            .collect();
        append(&mut ls, entries.clone()).await;
        apply(&mut sm, entries).await;
        let txn = store.db.begin_write().unwrap();
        {
            let mut t = txn.open_table(tables::LEASES).unwrap();
            let key = u32::from(Ipv4Addr::new(10, 0, 0, 2));
            let mut v = t.get(key).unwrap().unwrap().value().to_vec();
            v[6] ^= 0x04;
            t.insert(key, v.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    match Store::<C>::open(dir.path()) {
        Err(StoreError::Corrupt { what, .. }) => assert_eq!(what, "lease 10.0.0.2"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened a store with a corrupt lease row"),
    }
}
