//! The contract suite on SQLite, a fresh file per test, and checks only SQLite has.

use async_trait::async_trait;
use keyward_store::{
    AuditStore as _, ChangeFeed as _, Maintenance as _, TokenStore as _, UserStore as _,
};
use keyward_store::{SqliteStore, Store, StoreError};
use std::path::PathBuf;
use tempfile::TempDir;

use crate::fixtures::{Database, T0, add_token, add_user};

/// A fresh SQLite file in its own temporary directory.
pub struct SqliteDb {
    _dir: TempDir,
    path: PathBuf,
}

impl SqliteDb {
    pub async fn fresh() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyward.db");
        Self { _dir: dir, path }
    }
}

impl crate::contract::Fresh for SqliteDb {
    type Db = Self;
    fn into_fresh(self) -> Option<Self> {
        Some(self)
    }
}

#[async_trait]
impl Database for SqliteDb {
    async fn open(&self) -> Box<dyn Store> {
        Box::new(SqliteStore::open(&self.path).await.unwrap())
    }

    async fn sibling(&self) -> Box<dyn Database> {
        Box::new(Self::fresh().await)
    }
}

mod contract {
    crate::contract::contract_suite!(super::SqliteDb::fresh());
}

#[tokio::test]
async fn open_creates_the_database_and_epoch_files_privately() {
    let db = SqliteDb::fresh().await;
    let store = SqliteStore::open(&db.path).await.unwrap();
    store.ping().await.unwrap();
    let epoch = db.path.with_file_name("keyward.db-epoch");
    assert_eq!(std::fs::metadata(&epoch).unwrap().len(), 8);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for file in [&db.path, &epoch] {
            assert_eq!(
                std::fs::metadata(file).unwrap().permissions().mode() & 0o777,
                0o600,
                "{}",
                file.display()
            );
        }
    }
    store.close().await;
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable { .. })
    ));
}

#[tokio::test]
async fn open_needs_the_parent_directory() {
    let dir = tempfile::tempdir().unwrap();
    let err = SqliteStore::open(&dir.path().join("missing/keyward.db"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn the_database_is_in_wal_mode() {
    let db = SqliteDb::fresh().await;
    let _store = SqliteStore::open(&db.path).await.unwrap();
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&db.path);
    let mut conn = sqlx::ConnectOptions::connect(&options).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn a_row_keyward_could_not_have_written_is_corrupt() {
    let db = SqliteDb::fresh().await;
    let store = SqliteStore::open(&db.path).await.unwrap();
    let alice = add_user(&store, "alice").await;
    let (token, hash) = add_token(&store, &alice.id, T0).await;

    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&db.path);
    let mut conn = sqlx::ConnectOptions::connect(&options).await.unwrap();
    sqlx::query("UPDATE tokens SET scopes = 'not a scope!' WHERE id = ?1")
        .bind(token.id.as_str())
        .execute(&mut conn)
        .await
        .unwrap();
    let err = store.token(&token.id, None).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { ref what, .. } if what.contains("scopes")),
        "{err:?}"
    );
    // `lookup` reads through its own connections (rusqlite), and decodes the same way.
    let err = store.lookup(&hash.hash).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { ref what, .. } if what.contains("scopes")),
        "{err:?}"
    );
}

#[tokio::test]
async fn closing_refuses_lookups_and_checkpoints_the_wal() {
    let db = SqliteDb::fresh().await;
    let store = SqliteStore::open(&db.path).await.unwrap();
    let alice = add_user(&store, "alice").await;
    let (_, hash) = add_token(&store, &alice.id, T0).await;
    assert!(store.lookup(&hash.hash).await.unwrap().is_some());
    store.close().await;
    assert!(matches!(
        store.lookup(&hash.hash).await,
        Err(StoreError::Unavailable { .. })
    ));
    // The last connection to close checkpoints the WAL and removes it; a lookup's read-only
    // connection left open would keep it.
    let wal = db.path.with_file_name("keyward.db-wal");
    assert!(!wal.exists(), "{} is left", wal.display());
}

#[tokio::test]
async fn a_file_keeps_a_cache_snapshot_seal() {
    let db = SqliteDb::fresh().await;
    let store = SqliteStore::open(&db.path).await.unwrap();
    assert!(store.seal_cache_snapshot(&[7; 32]).await.unwrap());
    assert_eq!(store.cache_snapshot_seal().await.unwrap(), Some([7; 32]));
}

#[tokio::test]
async fn reopening_does_not_reapply_migrations() {
    let db = SqliteDb::fresh().await;
    let store = SqliteStore::open(&db.path).await.unwrap();
    let alice = add_user(&store, "alice").await;
    store.close().await;
    let reopened = SqliteStore::open(&db.path).await.unwrap();
    assert_eq!(reopened.user_by_id(&alice.id).await.unwrap(), Some(alice));
}

#[tokio::test]
async fn a_write_held_open_does_not_block_lookups() {
    // WAL: a reader sees the last commit and never waits for the writer. A revocation that is
    // written but not committed must neither stall a verification's lookup nor show in it.
    let db = SqliteDb::fresh().await;
    let store = SqliteStore::open(&db.path).await.unwrap();
    let alice = add_user(&store, "alice").await;
    let (token, hash) = add_token(&store, &alice.id, T0).await;
    let revoked_at = T0 + time::Duration::hours(1);

    let writer = rusqlite::Connection::open(&db.path).unwrap();
    writer.execute_batch("BEGIN IMMEDIATE").unwrap();
    let changed = writer
        .execute(
            "UPDATE tokens SET revoked_at = ?2, revoked_by = 'test' WHERE id = ?1",
            (token.id.as_str(), revoked_at.unix_timestamp()),
        )
        .unwrap();
    assert_eq!(changed, 1);

    // Several times: the first opens a read connection, the later ones reuse it.
    for _ in 0..5 {
        let start = std::time::Instant::now();
        let found = store.lookup(&hash.hash).await.unwrap().unwrap();
        let took = start.elapsed();
        assert!(
            took < std::time::Duration::from_secs(1),
            "a lookup waited {took:?}"
        );
        assert_eq!(found.token, token, "the uncommitted revocation showed");
    }
    // The pool's readers (sqlx) don't wait either.
    let start = std::time::Instant::now();
    assert_eq!(
        store.token(&token.id, None).await.unwrap(),
        Some(token.clone())
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(1));

    writer.execute_batch("COMMIT").unwrap();
    let found = store.lookup(&hash.hash).await.unwrap().unwrap();
    assert_eq!(found.token.revoked_at, Some(revoked_at));
    assert_eq!(found.token.revoked_by.as_deref(), Some("test"));
}

#[tokio::test]
async fn a_newer_release_s_migration_and_audit_kind_are_tolerated() {
    let db = SqliteDb::fresh().await;
    let store = SqliteStore::open(&db.path).await.unwrap();
    store.close().await;
    // What the next release may have done to the shared database: a migration this one does not
    // know, and an event of a kind it does not know.
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&db.path);
    let mut conn = sqlx::ConnectOptions::connect(&options).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', 1, x'00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    for (kind, detail) in [("token.teleported", Some("to mars")), ("user.cloned", None)] {
        sqlx::query(
            "INSERT INTO audit_events (at, kind, actor_label, detail) VALUES (0, ?1, 'next', ?2)",
        )
        .bind(kind)
        .bind(detail)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    drop(conn);

    let store = SqliteStore::open(&db.path).await.unwrap();
    let events = store
        .audit_events(&keyward_store::AuditFilter {
            subject_user: None,
            before_seq: None,
            limit: 100,
        })
        .await
        .unwrap();
    let read: Vec<_> = events
        .iter()
        .map(|e| (e.event.kind, e.event.detail.as_deref()))
        .collect();
    assert!(
        read.contains(&(
            keyward_core::AuditKind::Unrecognized,
            Some("token.teleported: to mars")
        )) && read.contains(&(keyward_core::AuditKind::Unrecognized, Some("user.cloned"))),
        "{read:?}"
    );
}

/// SQLite keeps its tokens in an order it reads cheaper than by recent use, and gives it: each
/// live token's secret once, in pages of at most `limit` tokens, the creation order (rowids).
#[tokio::test]
async fn secrets_are_given_in_store_order() {
    let db = SqliteDb::fresh().await;
    let store = SqliteStore::open(&db.path).await.unwrap();
    let alice = add_user(&store, "alice").await;
    let mut hashes = Vec::new();
    for i in 0..5 {
        hashes.push(
            add_token(&store, &alice.id, T0 + time::Duration::seconds(i))
                .await
                .1
                .hash,
        );
    }
    let now = T0 + time::Duration::minutes(1);
    let mut paged = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let Some(page) = store
            .secrets_in_store_order(now, after.as_ref(), 2, 5)
            .await
            .unwrap()
        else {
            panic!("five secrets fit in five, and SQLite has a store order");
        };
        pages += 1;
        assert!(page.secrets.len() <= 2);
        paged.extend(page.secrets.into_iter().map(|(hash, _)| hash));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, hashes, "in the order they were made");
    assert_eq!(pages, 3);
}
