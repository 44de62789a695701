//! [`EmbeddedKv`]: the key-value store on one redb file.
//!
//! # On disk
//!
//! ```text
//! <dir>/store.redb     one redb database; one table per namespace, named as it,
//!                      of `&str` keys to `&[u8]` values
//! ```
//!
//! redb is a copy-on-write B-tree with MVCC: readers see the last committed state and
//! never block the writer; writes are serialised, one transaction at a time.
//!
//! **Architecture Invariant:** every write is one redb transaction committed with
//! `Durability::Immediate` (fsync before the call returns), so a write that returned is
//! there after a crash and a bulk write is all there or not at all. A namespace without
//! a table reads as empty; tables are created by the first write.
//!
//! `get` answers from a read cache that every write empties (`cache`), so a key read
//! again and again costs a map lookup, and a read never misses a write that returned.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition, TableError};

use crate::cache::ReadCache;
use crate::error::StorageContext;
use crate::{
    Error, Existing, KeyPage, KeyValue, Result, check_entries, check_key, check_namespace,
    check_value,
};

fn table(namespace: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(namespace)
}

/// The embedded key-value store: one redb file, one table per namespace.
pub struct EmbeddedKv {
    db: Database,
    path: PathBuf,
    cache: ReadCache,
}

impl std::fmt::Debug for EmbeddedKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedKv")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedKv {
    /// The database file's name in its directory.
    pub const FILE_NAME: &str = "store.redb";

    /// Open the store in `dir` (creating the directory and the file if missing). Fails
    /// with [`Error::Locked`] while another process has it open.
    #[tracing::instrument(skip_all, err, fields(dir = %dir.display()))]
    pub fn open(dir: &Path) -> Result<EmbeddedKv> {
        std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(Self::FILE_NAME);
        let db = match Database::create(&path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(Error::Locked { path }),
            Err(e) => {
                return Err(e).storage(|| format!("open {}", path.display()));
            }
        };
        tracing::debug!(path = %path.display(), "key-value store open");
        Ok(EmbeddedKv {
            db,
            path,
            cache: ReadCache::default(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `read` on the namespace's table; none if the namespace has no table yet.
    fn read<T>(
        &self,
        namespace: &str,
        read: impl FnOnce(&redb::ReadOnlyTable<&'static str, &'static [u8]>) -> Result<T>,
    ) -> Result<Option<T>> {
        let txn = self
            .db
            .begin_read()
            .storage(|| format!("read namespace {namespace:?}"))?;
        match txn.open_table(table(namespace)) {
            Ok(t) => read(&t).map(Some),
            Err(TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(e).storage(|| format!("open namespace {namespace:?}")),
        }
    }

    /// Run `write` on the namespace's table in one transaction and commit it durably.
    fn write<T>(
        &self,
        namespace: &str,
        write: impl FnOnce(&mut redb::Table<'_, &'static str, &'static [u8]>) -> Result<T>,
    ) -> Result<T> {
        let action = || format!("write namespace {namespace:?}");
        // In flight until the transaction ended, whatever became of it (see `cache`).
        let writing = self.cache.writing();
        let result = (|| {
            let txn = self.db.begin_write().storage(action)?;
            let result = {
                let mut t = txn.open_table(table(namespace)).storage(action)?;
                write(&mut t)?
            };
            txn.commit().storage(action)?;
            Ok(result)
        })();
        drop(writing);
        result
    }
}

impl KeyValue for EmbeddedKv {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>> {
        check_namespace(namespace)?;
        check_key(namespace, key)?;
        let miss = match self.cache.get(namespace, key) {
            Ok(value) => return Ok(value),
            Err(miss) => miss,
        };
        let value = self
            .read(namespace, |t| {
                Ok(t.get(key)
                    .storage(|| format!("read key {key:?} of namespace {namespace:?}"))?
                    .map(|v| v.value().to_vec()))
            })?
            .flatten();
        self.cache.keep(miss, namespace, key, value.as_deref());
        Ok(value)
    }

    fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<()> {
        check_namespace(namespace)?;
        check_key(namespace, key)?;
        check_value(namespace, key, value)?;
        self.write(namespace, |t| {
            t.insert(key, value)
                .storage(|| format!("write key {key:?} of namespace {namespace:?}"))?;
            Ok(())
        })
    }

    fn delete(&self, namespace: &str, key: &str) -> Result<()> {
        check_namespace(namespace)?;
        check_key(namespace, key)?;
        if !self.exists(namespace, key)? {
            return Ok(());
        }
        self.write(namespace, |t| {
            t.remove(key)
                .storage(|| format!("delete key {key:?} of namespace {namespace:?}"))?;
            Ok(())
        })
    }

    fn exists(&self, namespace: &str, key: &str) -> Result<bool> {
        Ok(self.get(namespace, key)?.is_some())
    }

    fn list_keys(&self, namespace: &str, cursor: Option<u64>, limit: usize) -> Result<KeyPage> {
        check_namespace(namespace)?;
        let skip = cursor.unwrap_or(0);
        let limit = limit.max(1);
        let keys = self.read(namespace, |t| {
            let action = || format!("list keys of namespace {namespace:?}");
            // redb has no rank index: the cursor costs a walk over the skipped keys'
            // leaves, which is cheap next to the fsyncs that wrote them.
            let mut keys = Vec::with_capacity(limit + 1);
            for entry in t
                .iter()
                .storage(action)?
                .skip(usize::try_from(skip).unwrap_or(usize::MAX))
                .take(limit + 1)
            {
                let (key, _) = entry.storage(action)?;
                keys.push(key.value().to_owned());
            }
            Ok(keys)
        })?;
        let mut keys = keys.unwrap_or_default();
        let more = keys.len() > limit;
        keys.truncate(limit);
        Ok(KeyPage {
            cursor: more.then(|| skip + keys.len() as u64),
            keys,
        })
    }

    /// All or nothing, in one transaction.
    fn write_entries(
        &self,
        namespace: &str,
        entries: &[(String, Vec<u8>)],
        existing: Existing,
    ) -> Result<usize> {
        check_entries(namespace, entries)?;
        self.write(namespace, |t| {
            let action = || format!("write namespace {namespace:?}");
            let mut written = 0;
            for (key, value) in entries {
                if existing == Existing::Keep && t.get(key.as_str()).storage(action)?.is_some() {
                    continue;
                }
                t.insert(key.as_str(), value.as_slice()).storage(action)?;
                written += 1;
            }
            Ok(written)
        })
    }
}
