//! openraft's storage suite over the real store: sled in a temp dir.

use std::sync::Arc;

use hoard_store::{BlobStore, Index};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use openraft::StorageError;
use tokio::sync::watch;

use super::log_store::LogStore;
use super::state_machine::StateMachine;
use super::TypeConfig;

struct SledStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for SledStoreBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir =
            tempfile::tempdir().map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        let store = |e: hoard_store::StoreError| {
            StorageError::read(TypeConfig::err_from_error(&std::io::Error::other(
                e.to_string(),
            )))
        };
        let index = Arc::new(Index::open(&dir.path().join("index")).map_err(store)?);
        let blobs = BlobStore::open(dir.path()).map_err(store)?;
        let log = LogStore::new(index.raft_log().map_err(store)?);
        let (_, sources) = watch::channel(Vec::new());
        let net = crate::Net::new("127.0.0.1:0".into(), None, None);
        let sm = StateMachine::new(index, blobs, dir.path().join("snapshots"), sources, net)
            .map_err(store)?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(SledStoreBuilder).await.unwrap();
}
