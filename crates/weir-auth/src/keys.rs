//! API keys: created, listed and revoked by `weir auth` (offline against the data
//! directory, or over HTTP), verified on every request.
//!
//! A key is shown once, as `weir_<id>_<secret>`: 8 random bytes of id and 32 of secret,
//! in hex. The node keeps only the secret's SHA-256, in `<data>/auth/api-keys.json`
//! (`{"version": 1, "keys": [...]}`), and compares it in constant time.
//!
//! **Architecture Invariant:** every change is made under an exclusive lock on
//! `<data>/auth/api-keys.lock`, to a copy read fresh under that lock, and lands by an
//! atomic rename: `weir auth key create --data` beside a running node loses neither's
//! change. A node re-reads the file when it changes (checked at most once a second), so
//! a key revoked offline stops working within a second without a restart.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{AuthError, Error, Result};

const FILE_VERSION: u32 = 1;
const PREFIX: &str = "weir_";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;
/// How often `verify` looks whether another process changed the file.
const RECHECK: Duration = Duration::from_secs(1);

/// One key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    pub id: String,
    pub principal: String,
    pub roles: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339; `None` never expires.
    pub expires_at: Option<String>,
    /// RFC 3339, when it was revoked.
    pub revoked_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    #[serde(flatten)]
    info: KeyInfo,
    /// Hex SHA-256 of the secret.
    secret_sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    keys: Vec<Record>,
}

#[derive(Debug, Default)]
struct Snapshot {
    keys: Vec<Record>,
    /// The file's modification time and length when read; `None` if it did not exist.
    stamp: Option<(SystemTime, u64)>,
}

/// The node's API keys.
#[derive(Debug)]
pub struct ApiKeyStore {
    path: PathBuf,
    lock_path: PathBuf,
    snapshot: RwLock<Arc<Snapshot>>,
    last_check: Mutex<Instant>,
}

impl ApiKeyStore {
    /// The store of the node whose data directory is `data_dir`; creates `auth/` in it.
    pub fn open(data_dir: &Path) -> Result<ApiKeyStore> {
        let dir = data_dir.join("auth");
        fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let store = ApiKeyStore {
            path: dir.join("api-keys.json"),
            lock_path: dir.join("api-keys.lock"),
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            last_check: Mutex::new(Instant::now()),
        };
        let snapshot = store.read_file()?;
        *store.snapshot.write().expect("not poisoned") = Arc::new(snapshot);
        Ok(store)
    }

    /// Makes a key for `principal` with `roles`, valid until `expires_at` if given.
    /// Returns what is listed and the key itself, which is shown only now.
    pub fn create(
        &self,
        principal: &str,
        roles: Vec<String>,
        expires_at: Option<OffsetDateTime>,
    ) -> Result<(KeyInfo, String)> {
        if principal.is_empty() || principal.len() > 256 || principal.chars().any(char::is_control)
        {
            return Err(Error::Invalid(
                "a principal is 1 to 256 printable characters".to_owned(),
            ));
        }
        let id = hex::encode(random::<ID_BYTES>()?);
        let secret = hex::encode(random::<SECRET_BYTES>()?);
        let info = KeyInfo {
            id: id.clone(),
            principal: principal.to_owned(),
            roles,
            created_at: rfc3339(OffsetDateTime::now_utc()),
            expires_at: expires_at.map(rfc3339),
            revoked_at: None,
        };
        let record = Record {
            info: info.clone(),
            secret_sha256: hex::encode(Sha256::digest(secret.as_bytes())),
        };
        self.change(|file| {
            file.keys.push(record);
            Ok(())
        })?;
        Ok((info, format!("{PREFIX}{id}_{secret}")))
    }

    /// Revokes the key `id`: it stops working at once on this node, within a second on a
    /// node sharing the data directory. Revoking a revoked key is not an error.
    pub fn revoke(&self, id: &str) -> Result<KeyInfo> {
        let mut revoked = None;
        self.change(|file| {
            let record = file
                .keys
                .iter_mut()
                .find(|record| record.info.id == id)
                .ok_or_else(|| Error::NoSuchKey(id.to_owned()))?;
            if record.info.revoked_at.is_none() {
                record.info.revoked_at = Some(rfc3339(OffsetDateTime::now_utc()));
            }
            revoked = Some(record.info.clone());
            Ok(())
        })?;
        Ok(revoked.expect("set by the change"))
    }

    /// Every key, oldest first, revoked ones included.
    pub fn list(&self) -> Result<Vec<KeyInfo>> {
        self.refresh()?;
        let snapshot = self.snapshot.read().expect("not poisoned").clone();
        Ok(snapshot.keys.iter().map(|r| r.info.clone()).collect())
    }

    /// Whether `token` looks like an API key rather than a JWT.
    pub fn is_key(token: &str) -> bool {
        token.starts_with(PREFIX)
    }

    /// The key `token` is, if it is a valid one.
    pub fn verify(&self, token: &str) -> Result<KeyInfo, AuthError> {
        let (id, secret) = token
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .filter(|(id, secret)| id.len() == ID_BYTES * 2 && secret.len() == SECRET_BYTES * 2)
            .ok_or_else(|| {
                AuthError::Malformed("an API key is weir_<16 hex digits>_<64 hex digits>".into())
            })?;
        if let Ok(mut last) = self.last_check.try_lock()
            && last.elapsed() >= RECHECK
        {
            *last = Instant::now();
            if let Err(error) = self.refresh() {
                tracing::warn!(%error, "could not re-read the API key file; using the keys read before");
            }
        }
        let snapshot = self.snapshot.read().expect("not poisoned").clone();
        let record = snapshot
            .keys
            .iter()
            .find(|record| record.info.id == id)
            .ok_or(AuthError::UnknownKey)?;
        let presented = hex::encode(Sha256::digest(secret.as_bytes()));
        if !bool::from(presented.as_bytes().ct_eq(record.secret_sha256.as_bytes())) {
            return Err(AuthError::WrongSecret);
        }
        if record.info.revoked_at.is_some() {
            return Err(AuthError::RevokedKey { id: id.to_owned() });
        }
        if let Some(expires_at) = &record.info.expires_at {
            let expired = OffsetDateTime::parse(expires_at, &Rfc3339)
                .map(|at| at <= OffsetDateTime::now_utc())
                .unwrap_or(true);
            if expired {
                return Err(AuthError::ExpiredKey { id: id.to_owned() });
            }
        }
        Ok(record.info.clone())
    }

    /// Re-reads the file if it changed since it was last read.
    fn refresh(&self) -> Result<()> {
        let stamp = stamp(&self.path)?;
        if self.snapshot.read().expect("not poisoned").stamp == stamp {
            return Ok(());
        }
        let snapshot = self.read_file()?;
        *self.snapshot.write().expect("not poisoned") = Arc::new(snapshot);
        Ok(())
    }

    fn read_file(&self) -> Result<Snapshot> {
        let stamp = stamp(&self.path)?;
        let text = match fs::read(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Snapshot::default());
            }
            Err(source) => {
                return Err(Error::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let file: KeyFile = serde_json::from_slice(&text).map_err(|e| Error::KeyFile {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        if file.version != FILE_VERSION {
            return Err(Error::KeyFile {
                path: self.path.clone(),
                reason: format!(
                    "version {} (this weir reads version {FILE_VERSION})",
                    file.version
                ),
            });
        }
        Ok(Snapshot {
            keys: file.keys,
            stamp,
        })
    }

    /// Applies `edit` to the file as it is now, under the lock, and replaces it.
    fn change(&self, edit: impl FnOnce(&mut KeyFile) -> Result<()>) -> Result<()> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io { path, source }
        };
        let lock = File::create(&self.lock_path).map_err(io(&self.lock_path))?;
        lock.lock().map_err(io(&self.lock_path))?;
        let current = self.read_file()?;
        let mut file = KeyFile {
            version: FILE_VERSION,
            keys: current.keys,
        };
        edit(&mut file)?;
        let tmp = self.path.with_extension("json.tmp");
        let mut out = File::create(&tmp).map_err(io(&tmp))?;
        let json = serde_json::to_vec_pretty(&file).expect("key files serialize");
        out.write_all(&json).map_err(io(&tmp))?;
        out.sync_all().map_err(io(&tmp))?;
        fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
        }
        let snapshot = self.read_file()?;
        *self.snapshot.write().expect("not poisoned") = Arc::new(snapshot);
        drop(lock);
        Ok(())
    }
}

fn stamp(path: &Path) -> Result<Option<(SystemTime, u64)>> {
    match fs::metadata(path) {
        Ok(meta) => Ok(Some((
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Invalid(format!("the system's random source failed: {e}")))?;
    Ok(bytes)
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.replace_nanosecond(0)
        .unwrap_or(at)
        .format(&Rfc3339)
        .expect("UTC times format as RFC 3339")
}

/// Parses a duration such as `90d`, `12h`, `30m` or `3600s`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number.parse().map_err(|_| {
        Error::Invalid(format!(
            "{text:?} is not a duration like 90d, 12h, 30m or 3600s"
        ))
    })?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => {
            return Err(Error::Invalid(format!(
                "{text:?} is not a duration like 90d, 12h, 30m or 3600s"
            )));
        }
    };
    n.checked_mul(seconds)
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| Error::Invalid(format!("{text:?} is not a positive duration")))
}
