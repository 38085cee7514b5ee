//! openraft's own log-store and state-machine conformance suite.

use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;
use tempfile::TempDir;

use super::C;
use crate::store::{LogStore, StateMachine, Store};

/// Every suite case gets a fresh data dir; the `TempDir` guard removes it.
struct FreshDir;

impl StoreBuilder<C, LogStore<C>, StateMachine<C>, TempDir> for FreshDir {
    async fn build(&self) -> Result<(TempDir, LogStore<C>, StateMachine<C>), StorageError<C>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::<C>::open(dir.path()).expect("open store");
        Ok((dir, store.log_store(), store.state_machine()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes() {
    Suite::test_all(FreshDir)
        .await
        .expect("openraft storage suite");
}
