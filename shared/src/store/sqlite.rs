//! The embedded SQLite adapter: the default store, for `keyward serve` and for tests.
//!
//! One connection writes, behind a mutex, from Tokio's blocking pool: SQLite has one writer at
//! a time anyway. A database file (in WAL mode) also gets four read-only connections, so that
//! one-row reads, which take microseconds, run in place beside each other and beside a write;
//! an in-memory database has only the one connection. Records are kept as JSON beside the
//! columns that queries filter and order on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};

use super::{
    ActivityFilter, KeyLookup, KeyStore, Page, PageRequest, StoreError, UsageOwner, UsageStore,
    due_sort_key,
};
use crate::domain::{
    ActivityEntry, Change, EnvName, Environment, EnvironmentWrite, HourlyUsage, Key, KeyHash,
    KeyId, KeyWrite, LastUse, SEEN_LIMIT, Timestamp, USAGE_RETENTION, UsageTally, hour_of,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS environments (
    name TEXT PRIMARY KEY,
    default_key_id TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    version INTEGER NOT NULL,
    due_at TEXT,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS keys_by_environment ON keys (environment, id);
CREATE TABLE IF NOT EXISTS activity (
    id TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    key_id TEXT NOT NULL,
    related_key_id TEXT,
    action TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS activity_by_environment ON activity (environment, id);
CREATE INDEX IF NOT EXISTS activity_by_key ON activity (key_id, id);
CREATE INDEX IF NOT EXISTS activity_by_related_key ON activity (related_key_id, id) WHERE related_key_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS usage_hours (
    key_id TEXT NOT NULL,
    hour TEXT NOT NULL,
    accepted INTEGER NOT NULL,
    refused INTEGER NOT NULL,
    PRIMARY KEY (key_id, hour)
);
CREATE TABLE IF NOT EXISTS usage_seen (
    key_id TEXT NOT NULL,
    hour TEXT NOT NULL,
    address TEXT NOT NULL,
    PRIMARY KEY (key_id, hour, address)
);
CREATE TABLE IF NOT EXISTS usage_last (
    key_id TEXT PRIMARY KEY,
    last_used_at TEXT,
    last_refused_at TEXT
);
CREATE TABLE IF NOT EXISTS secret_claims (
    environment TEXT NOT NULL,
    secret TEXT NOT NULL,
    holder TEXT NOT NULL,
    PRIMARY KEY (environment, secret)
);
";

/// The index behind scheduled runs, made after [`add_due_at`] has brought an older file's
/// `keys` table up to date.
const DUE_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS keys_by_due ON keys (due_at, id) WHERE due_at IS NOT NULL;";

/// Adds and fills the `due_at` column in a file made before scheduled rotation existed.
fn add_due_at(conn: &mut Connection) -> Result<(), StoreError> {
    let present: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info('keys') WHERE name = 'due_at')",
            [],
            |row| row.get(0),
        )
        .map_err(backend)?;
    if present {
        return Ok(());
    }
    let tx = conn.transaction().map_err(backend)?;
    tx.execute_batch("ALTER TABLE keys ADD COLUMN due_at TEXT")
        .map_err(backend)?;
    let keys: Vec<Key> = {
        let mut stmt = tx.prepare("SELECT record FROM keys").map_err(backend)?;
        let rows = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(backend)?;
        rows.map(|row| decode(&row.map_err(backend)?))
            .collect::<Result<_, _>>()?
    };
    for key in keys {
        tx.execute(
            "UPDATE keys SET due_at = ?1 WHERE id = ?2",
            params![due_at(&key), key.id.as_str()],
        )
        .map_err(backend)?;
    }
    tx.commit().map_err(backend)
}

fn due_at(key: &Key) -> Option<String> {
    key.next_due_at().map(due_sort_key)
}

/// The SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    /// Read-only connections to the same file, for one-row reads: in WAL mode they read beside
    /// each other and beside a write, so concurrent requests do not queue on `conn`. An
    /// in-memory database has none, since another connection would open another database.
    /// They come first so that they close first, and the writing connection, closing last,
    /// checkpoints the WAL into the file.
    readers: Arc<[Mutex<Connection>]>,
    conn: Arc<Mutex<Connection>>,
    /// Keys read by hash, when this store is the only one that writes its database.
    known: Option<Arc<KnownKeys>>,
    /// The lock on `<database>.lock` that [`SqliteStore::open_owned`] holds while the store
    /// lives, so that no second owner writes the file behind `known`.
    _owner: Option<Arc<std::fs::File>>,
}

/// The keys a store has read by hash since its last write, so that checking a known key,
/// the hot path of `keyward serve`, asks SQLite nothing. Every write through the store empties
/// it once the write has committed, so a revocation holds from the next request; a read that
/// began before a write keeps nothing. Only keys found are kept (an unknown secret costs a read
/// each time and no memory), at most [`KNOWN_KEYS`] of them, each for at most [`KNOWN_FOR`].
/// No other process may change a key in the file, which is why [`SqliteStore::open_owned`]
/// takes the file's lock; the time limit bounds what a write that takes no lock (the `sqlite3`
/// shell, a backup restored over the file) can leave stale.
#[derive(Default)]
struct KnownKeys(Mutex<Known>);

#[derive(Default)]
struct Known {
    /// How many writes have emptied the map: a read keeps its key only if none came between.
    writes: u64,
    /// Each key, and when it was read.
    keys: HashMap<KeyHash, (Key, Instant)>,
}

/// How many keys [`KnownKeys`] holds before it starts again from empty.
const KNOWN_KEYS: usize = 4_096;

/// How long [`KnownKeys`] trusts a key it read: a key changed behind the store's back is seen
/// within this, at the cost of one read per key and period.
const KNOWN_FOR: Duration = Duration::from_secs(1);

impl KnownKeys {
    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key kept for `hash` if it was read less than [`KNOWN_FOR`] before `at`; else the
    /// count of writes so far, for [`KnownKeys::keep`].
    fn get(&self, hash: &KeyHash, at: Instant) -> Result<Option<Key>, u64> {
        let known = self.lock();
        match known.keys.get(hash) {
            Some((key, read)) if at.saturating_duration_since(*read) < KNOWN_FOR => {
                Ok(Some(key.clone()))
            }
            _ => Err(known.writes),
        }
    }

    /// Keeps `key`, read at `at`, unless a write came after the read began.
    fn keep(&self, read_after: u64, key: &Key, at: Instant) {
        let mut known = self.lock();
        if known.writes != read_after {
            return;
        }
        if known.keys.len() >= KNOWN_KEYS {
            known.keys.clear();
        }
        known.keys.insert(key.hash.clone(), (key.clone(), at));
    }

    fn forget(&self) {
        let mut known = self.lock();
        known.writes += 1;
        known.keys.clear();
    }
}

/// `<database>.lock`, beside the file that `path` resolves to, so that every spelling of one
/// database (a relative path, a symbolic link) names one lock.
fn lock_path(path: &Path) -> std::io::Result<PathBuf> {
    let real = match std::fs::canonicalize(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let folder = match path.parent() {
                Some(folder) if !folder.as_os_str().is_empty() => folder,
                _ => Path::new("."),
            };
            let name = path
                .file_name()
                .ok_or_else(|| std::io::Error::other("the path names no file"))?;
            std::fs::canonicalize(folder)?.join(name)
        }
        resolved => resolved?,
    };
    let mut lock = real.into_os_string();
    lock.push(".lock");
    Ok(lock.into())
}

/// How many read-only connections a file-backed store keeps.
const READERS: usize = 4;

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// A failed uniqueness or other constraint is a conflict with an existing record.
fn write_error(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation) => StoreError::Conflict,
        _ => backend(e),
    }
}

fn decode<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(backend)
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(backend)
}

/// Reads up to `limit + 1` records to learn whether another page follows.
fn page<T: serde::de::DeserializeOwned>(
    stmt: &mut rusqlite::Statement<'_>,
    params: &[&dyn rusqlite::ToSql],
    limit: usize,
    id_of: impl Fn(&T) -> String,
) -> Result<Page<T>, StoreError> {
    let rows = stmt
        .query_map(params, |row| row.get::<_, String>(0))
        .map_err(backend)?;
    let mut items = Vec::with_capacity(limit + 1);
    for row in rows {
        items.push(decode::<T>(&row.map_err(backend)?)?);
    }
    Ok(Page::from_overfetch(items, limit, id_of))
}

fn apply_key(tx: &Transaction<'_>, write: &KeyWrite) -> Result<(), StoreError> {
    match write {
        KeyWrite::Insert(key) => {
            tx.execute(
                "INSERT INTO keys (id, environment, hash, version, due_at, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![key.id.as_str(), key.environment.as_str(), key.hash.to_hex(), key.version, due_at(key), encode(key)?],
            )
            .map_err(write_error)?;
        }
        KeyWrite::Update {
            key,
            expected_version,
        } => {
            let changed = tx
                .execute(
                    "UPDATE keys SET version = ?1, due_at = ?2, record = ?3 WHERE id = ?4 AND version = ?5",
                    params![key.version, due_at(key), encode(key)?, key.id.as_str(), expected_version],
                )
                .map_err(write_error)?;
            if changed == 0 {
                return Err(StoreError::Conflict);
            }
        }
    }
    Ok(())
}

/// Records `change`'s claim on a secret, unless another key still delivers to it. It runs
/// after the change's key writes, so that a change decided on a stale key is a conflict, not
/// a claimed secret.
fn apply_claim(tx: &Transaction<'_>, change: &Change) -> Result<(), StoreError> {
    let Some(claim) = &change.secret_claim else {
        return Ok(());
    };
    let (environment, secret) = (claim.environment.as_str(), claim.secret.as_str());
    let holder: Option<String> = tx
        .query_row(
            "SELECT holder FROM secret_claims WHERE environment = ?1 AND secret = ?2",
            params![environment, secret],
            |row| row.get(0),
        )
        .optional()
        .map_err(backend)?;
    let current = match holder {
        Some(holder) => {
            let holder = KeyId::parse(&holder).map_err(backend)?;
            let record: Option<String> = tx
                .query_row(
                    "SELECT record FROM keys WHERE id = ?1",
                    params![holder.as_str()],
                    |row| row.get(0),
                )
                .optional()
                .map_err(backend)?;
            let key = record.as_deref().map(decode::<Key>).transpose()?;
            Some((holder, key))
        }
        None => unclaimed_deliverer(tx, change)?.map(|key| (key.id.clone(), Some(key))),
    };
    if let Some((holder, key)) = current
        && !change.may_claim_from(&holder, key.as_ref())
    {
        return Err(StoreError::SecretClaimed);
    }
    tx.execute(
        "INSERT INTO secret_claims (environment, secret, holder) VALUES (?1, ?2, ?3)
         ON CONFLICT (environment, secret) DO UPDATE SET holder = excluded.holder",
        params![environment, secret, claim.holder.as_str()],
    )
    .map_err(write_error)?;
    Ok(())
}

/// A key of the change's environment, other than those the change writes, that delivers to
/// the secret it claims although nobody holds the claim: a policy stored before secrets had
/// claims. Read only for a secret that has no claim yet, so once per secret.
fn unclaimed_deliverer(tx: &Transaction<'_>, change: &Change) -> Result<Option<Key>, StoreError> {
    let Some(claim) = &change.secret_claim else {
        return Ok(None);
    };
    let mut statement = tx
        .prepare("SELECT record FROM keys WHERE environment = ?1")
        .map_err(backend)?;
    let rows = statement
        .query_map(params![claim.environment.as_str()], |row| {
            row.get::<_, String>(0)
        })
        .map_err(backend)?;
    for row in rows {
        let key: Key = decode(&row.map_err(backend)?)?;
        if !change.writes(&key.id) && key.delivers_to(&claim.secret, change.activity.at) {
            return Ok(Some(key));
        }
    }
    Ok(None)
}

/// The environment `name` as stored in the transaction; one that is not is a conflict, since
/// a change that writes it read it first.
fn stored_environment(tx: &Transaction<'_>, name: &EnvName) -> Result<Environment, StoreError> {
    let record: Option<String> = tx
        .query_row(
            "SELECT record FROM environments WHERE name = ?1",
            params![name.as_str()],
            |row| row.get(0),
        )
        .optional()
        .map_err(backend)?;
    decode(&record.ok_or(StoreError::Conflict)?)
}

fn apply_environment(tx: &Transaction<'_>, write: &EnvironmentWrite) -> Result<(), StoreError> {
    match write {
        EnvironmentWrite::Create(env) => {
            tx.execute(
                "INSERT INTO environments (name, default_key_id, record) VALUES (?1, ?2, ?3)",
                params![env.name.as_str(), env.default_key_id.as_str(), encode(env)?],
            )
            .map_err(write_error)?;
        }
        EnvironmentWrite::MoveDefault { name, from, to } => {
            let env = stored_environment(tx, name)?;
            if env.default_key_id != *from {
                return Err(StoreError::Conflict);
            }
            let moved = Environment {
                default_key_id: to.clone(),
                ..env
            };
            tx.execute(
                "UPDATE environments SET default_key_id = ?1, record = ?2 WHERE name = ?3",
                params![to.as_str(), encode(&moved)?, name.as_str()],
            )
            .map_err(write_error)?;
        }
        EnvironmentWrite::SetLeakPolicy {
            name,
            default_key_id,
            previous,
            policy,
        } => {
            let env = stored_environment(tx, name)?;
            if env.leak_policy != *previous || env.default_key_id != *default_key_id {
                return Err(StoreError::Conflict);
            }
            let set = Environment {
                leak_policy: *policy,
                ..env
            };
            tx.execute(
                "UPDATE environments SET record = ?1 WHERE name = ?2",
                params![encode(&set)?, name.as_str()],
            )
            .map_err(write_error)?;
        }
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (or creates) the database file at `path`, with its read-only connections when it
    /// is a file in WAL mode.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let store = Self::init(Connection::open(path).map_err(backend)?)?;
        let beside = {
            let conn = store.conn.lock().unwrap_or_else(|p| p.into_inner());
            let mode: String = conn
                .query_row("PRAGMA journal_mode", [], |row| row.get(0))
                .map_err(backend)?;
            mode.eq_ignore_ascii_case("wal") && conn.path().is_some_and(|p| !p.is_empty())
        };
        if !beside {
            return Ok(store);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let readers = (0..READERS)
            .map(|_| {
                let reader = Connection::open_with_flags(path, flags).map_err(backend)?;
                reader
                    .busy_timeout(std::time::Duration::from_secs(5))
                    .map_err(backend)?;
                Ok(Mutex::new(reader))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Self {
            readers: readers.into(),
            ..store
        })
    }

    /// Opens the database file at `path` for the one process that serves it, as `keyward
    /// serve` does: it holds an exclusive lock on `<path>.lock` until the store is dropped,
    /// refusing a second owner, and keeps the keys it reads by hash in memory
    /// ([`KnownKeys`]). Another process may still add environments (`keyward env create`);
    /// none may change a key.
    pub fn open_owned(path: &Path) -> Result<Self, StoreError> {
        if path.as_os_str().is_empty() || path == Path::new(":memory:") {
            return Self::in_memory();
        }
        let lock_path = lock_path(path).map_err(|e| {
            StoreError::Backend(format!("cannot name {}'s lock: {e}", path.display()).into())
        })?;
        let cannot_lock = |e: std::io::Error| {
            StoreError::Backend(format!("cannot lock {}: {e}", lock_path.display()).into())
        };
        // A lock file that exists is only read, so one left by another user still serves.
        let lock = match std::fs::File::open(&lock_path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path),
            opened => opened,
        }
        .map_err(cannot_lock)?;
        lock.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => StoreError::Backend(
                format!(
                    "another process serves {} (it holds {})",
                    path.display(),
                    lock_path.display()
                )
                .into(),
            ),
            std::fs::TryLockError::Error(e) => cannot_lock(e),
        })?;
        Ok(Self {
            known: Some(Arc::default()),
            _owner: Some(Arc::new(lock)),
            ..Self::open(path)?
        })
    }

    /// A private in-memory database, for tests; no other connection can write it, so it keeps
    /// the keys it reads by hash as [`SqliteStore::open_owned`] does.
    pub fn in_memory() -> Result<Self, StoreError> {
        Ok(Self {
            known: Some(Arc::default()),
            ..Self::init(Connection::open_in_memory().map_err(backend)?)?
        })
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;",
        )
        .map_err(backend)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        add_due_at(&mut conn)?;
        conn.execute_batch(DUE_INDEX).map_err(backend)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            readers: Arc::new([]),
            known: None,
            _owner: None,
        })
    }

    async fn with<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(backend)?
    }

    async fn one<T>(&self, sql: &'static str, param: String) -> Result<Option<T>, StoreError>
    where
        T: serde::de::DeserializeOwned + Send + 'static,
    {
        let read = move |conn: &mut Connection| {
            let json: Option<String> = conn
                .prepare_cached(sql)
                .and_then(|mut statement| statement.query_row([param], |row| row.get(0)))
                .optional()
                .map_err(backend)?;
            json.map(|j| decode(&j)).transpose()
        };
        // One row by an indexed key takes a few microseconds, less than the hop to the
        // blocking pool and back, so it runs in place on the first free connection; when
        // every one is busy (a write, which may wait on the disk, holds the main one), it
        // goes to the pool.
        {
            let free = self
                .readers
                .iter()
                .chain(std::iter::once(&*self.conn))
                .find_map(|conn| conn.try_lock().ok());
            if let Some(mut conn) = free {
                return read(&mut conn);
            }
        }
        self.with(read).await
    }
}

#[async_trait]
impl KeyLookup for SqliteStore {
    async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<Key>, StoreError> {
        let at = Instant::now();
        let read_after = match self.known.as_deref().map(|known| known.get(hash, at)) {
            Some(Ok(key)) => return Ok(key),
            Some(Err(writes)) => Some(writes),
            None => None,
        };
        let key: Option<Key> = self
            .one("SELECT record FROM keys WHERE hash = ?1", hash.to_hex())
            .await?;
        if let (Some(known), Some(writes), Some(key)) = (&self.known, read_after, &key) {
            known.keep(writes, key, at);
        }
        Ok(key)
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn key(&self, id: &KeyId) -> Result<Option<Key>, StoreError> {
        self.one("SELECT record FROM keys WHERE id = ?1", id.to_string())
            .await
    }

    async fn environment(&self, name: &EnvName) -> Result<Option<Environment>, StoreError> {
        self.one(
            "SELECT record FROM environments WHERE name = ?1",
            name.to_string(),
        )
        .await
    }

    async fn is_empty(&self) -> Result<bool, StoreError> {
        self.with(|conn| {
            conn.query_row(
                "SELECT NOT EXISTS (SELECT 1 FROM environments)",
                [],
                |row| row.get(0),
            )
            .map_err(backend)
        })
        .await
    }

    async fn keys(
        &self,
        environment: &EnvName,
        request: &PageRequest,
    ) -> Result<Page<Key>, StoreError> {
        let (env, after, limit) = (
            environment.to_string(),
            request.after.clone(),
            request.limit,
        );
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT record FROM keys WHERE environment = ?1 AND (?2 IS NULL OR id < ?2)
                     ORDER BY id DESC LIMIT ?3",
                )
                .map_err(backend)?;
            page(
                &mut stmt,
                &[&env, &after, &(limit as i64 + 1)],
                limit,
                |k: &Key| k.id.to_string(),
            )
        })
        .await
    }

    async fn key_activity(
        &self,
        id: &KeyId,
        request: &PageRequest,
    ) -> Result<Page<ActivityEntry>, StoreError> {
        let (id, after, limit) = (id.to_string(), request.after.clone(), request.limit);
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT record FROM activity WHERE (key_id = ?1 OR related_key_id = ?1)
                     AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3",
                )
                .map_err(backend)?;
            page(
                &mut stmt,
                &[&id, &after, &(limit as i64 + 1)],
                limit,
                |e: &ActivityEntry| e.id.as_str().to_owned(),
            )
        })
        .await
    }

    async fn environment_activity(
        &self,
        environment: &EnvName,
        filter: &ActivityFilter,
        request: &PageRequest,
    ) -> Result<Page<ActivityEntry>, StoreError> {
        let env = environment.to_string();
        let action = filter.action.map(|a| a.as_str());
        let key_id = filter.key_id.as_ref().map(KeyId::to_string);
        let (after, limit) = (request.after.clone(), request.limit);
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT record FROM activity WHERE environment = ?1
                     AND (?2 IS NULL OR action = ?2)
                     AND (?3 IS NULL OR key_id = ?3 OR related_key_id = ?3)
                     AND (?4 IS NULL OR id < ?4) ORDER BY id DESC LIMIT ?5",
                )
                .map_err(backend)?;
            page(
                &mut stmt,
                &[&env, &action, &key_id, &after, &(limit as i64 + 1)],
                limit,
                |e: &ActivityEntry| e.id.as_str().to_owned(),
            )
        })
        .await
    }

    async fn due_keys(&self, now: Timestamp, limit: usize) -> Result<Vec<Key>, StoreError> {
        let upto = due_sort_key(now);
        self.with(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT record FROM keys WHERE due_at IS NOT NULL AND due_at <= ?1
                     ORDER BY due_at, id LIMIT ?2",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![upto, limit as i64], |row| row.get::<_, String>(0))
                .map_err(backend)?;
            rows.map(|row| decode(&row.map_err(backend)?)).collect()
        })
        .await
    }

    async fn postpone(&self, key: &Key, until: Timestamp) -> Result<(), StoreError> {
        self.move_due(key, until).await
    }

    async fn apply(&self, change: &Change) -> Result<(), StoreError> {
        let change = change.clone();
        let known = self.known.clone();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            for write in &change.keys {
                apply_key(&tx, write)?;
            }
            if let Some(write) = &change.environment {
                apply_environment(&tx, write)?;
            }
            apply_claim(&tx, &change)?;
            let entry = &change.activity;
            tx.execute(
                "INSERT INTO activity (id, environment, key_id, related_key_id, action, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    entry.id.as_str(),
                    entry.environment.as_str(),
                    entry.key_id.as_str(),
                    entry.related_key_id().map(KeyId::as_str),
                    entry.event.action().as_str(),
                    encode(entry)?
                ],
            )
            .map_err(write_error)?;
            let committed = tx.commit().map_err(backend);
            // Here rather than after the await: the write commits even if the caller has
            // stopped waiting for it.
            if let Some(known) = known {
                known.forget();
            }
            committed
        })
        .await
    }
}

/// Moves a key's last use forward in `usage_last`; a time that is not later than the stored
/// one, or absent, leaves it as it is.
fn raise_last_use(conn: &Connection, id: &KeyId, last: LastUse) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO usage_last (key_id, last_used_at, last_refused_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (key_id) DO UPDATE SET
           last_used_at = CASE WHEN excluded.last_used_at > COALESCE(last_used_at, '')
                          THEN excluded.last_used_at ELSE last_used_at END,
           last_refused_at = CASE WHEN excluded.last_refused_at > COALESCE(last_refused_at, '')
                             THEN excluded.last_refused_at ELSE last_refused_at END",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            id.as_str(),
            last.last_used_at.map(due_sort_key),
            last.last_refused_at.map(due_sort_key)
        ])
    })
    .map_err(backend)?;
    Ok(())
}

fn time(text: &str) -> Result<Timestamp, StoreError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.to_utc())
        .map_err(backend)
}

impl SqliteStore {
    async fn move_due(&self, key: &Key, until: Timestamp) -> Result<(), StoreError> {
        let (id, version, due) = (key.id.to_string(), key.version, due_sort_key(until));
        self.with(move |conn| {
            conn.execute(
                "UPDATE keys SET due_at = ?1 WHERE id = ?2 AND version = ?3",
                params![due, id, version],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl UsageStore for SqliteStore {
    async fn add_usage(&self, tally: &UsageTally) -> Result<(), StoreError> {
        let tally = tally.clone();
        self.with(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            for (hour, (accepted, refused)) in &tally.hours {
                tx.prepare_cached(
                    "INSERT INTO usage_hours (key_id, hour, accepted, refused) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (key_id, hour) DO UPDATE SET
                       accepted = accepted + excluded.accepted,
                       refused = refused + excluded.refused",
                )
                .and_then(|mut statement| {
                    statement.execute(params![
                        tally.key_id.as_str(),
                        due_sort_key(*hour),
                        accepted,
                        refused
                    ])
                })
                .map_err(backend)?;
            }
            // An hour stops taking addresses once it holds SEEN_LIMIT, as DynamoDB's condition
            // on the hour's set does: a write is taken whole or not at all.
            for (hour, addresses) in &tally.seen {
                let hour = due_sort_key(*hour);
                let held: i64 = tx
                    .prepare_cached(
                        "SELECT count(*) FROM usage_seen WHERE key_id = ?1 AND hour = ?2",
                    )
                    .and_then(|mut statement| {
                        statement.query_row(params![tally.key_id.as_str(), hour], |row| row.get(0))
                    })
                    .map_err(backend)?;
                if held >= SEEN_LIMIT as i64 {
                    continue;
                }
                for address in addresses {
                    tx.prepare_cached(
                        "INSERT INTO usage_seen (key_id, hour, address) VALUES (?1, ?2, ?3)
                         ON CONFLICT (key_id, hour, address) DO NOTHING",
                    )
                    .and_then(|mut statement| {
                        statement.execute(params![
                            tally.key_id.as_str(),
                            hour,
                            address.to_string()
                        ])
                    })
                    .map_err(backend)?;
                }
            }
            raise_last_use(&tx, &tally.key_id, tally.last)?;
            // What DynamoDB's TTL does to old hours, done here by the write that adds new ones.
            if let Some(latest) = tally.hours.keys().next_back() {
                let before = due_sort_key(hour_of(*latest) - USAGE_RETENTION);
                for table in ["usage_hours", "usage_seen"] {
                    tx.prepare_cached(&format!(
                        "DELETE FROM {table} WHERE key_id = ?1 AND hour < ?2"
                    ))
                    .and_then(|mut statement| {
                        statement.execute(params![tally.key_id.as_str(), before])
                    })
                    .map_err(backend)?;
                }
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    /// Key ids are unique across environments, and no role is limited here, so usage is kept
    /// by key alone.
    async fn hourly_usage(
        &self,
        _: &EnvName,
        id: &KeyId,
        since: Timestamp,
    ) -> Result<Vec<HourlyUsage>, StoreError> {
        let (id, since) = (id.to_string(), due_sort_key(hour_of(since)));
        self.with(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT hour, accepted, refused FROM usage_hours
                     WHERE key_id = ?1 AND hour >= ?2 ORDER BY hour",
                )
                .map_err(backend)?;
            let rows = statement
                .query_map(params![id, since], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, u64>(1)?,
                        row.get::<_, u64>(2)?,
                    ))
                })
                .map_err(backend)?;
            rows.map(|row| {
                let (hour, accepted, refused) = row.map_err(backend)?;
                Ok(HourlyUsage {
                    hour: time(&hour)?,
                    accepted,
                    refused,
                })
            })
            .collect()
        })
        .await
    }

    async fn seen_addresses(
        &self,
        _: &EnvName,
        id: &KeyId,
        since: Timestamp,
    ) -> Result<Vec<(Timestamp, std::net::IpAddr)>, StoreError> {
        let (id, since) = (id.to_string(), due_sort_key(hour_of(since)));
        self.with(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT hour, address FROM usage_seen WHERE key_id = ?1 AND hour >= ?2",
                )
                .map_err(backend)?;
            let rows = statement
                .query_map(params![id, since], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })
                .map_err(backend)?;
            let mut seen = Vec::new();
            for row in rows {
                let (hour, address) = row.map_err(backend)?;
                // A row that cannot be read is left out, as on DynamoDB.
                if let (Ok(hour), Ok(address)) = (time(&hour), address.parse()) {
                    seen.push((hour, address));
                }
            }
            Ok(seen)
        })
        .await
    }

    async fn last_use(
        &self,
        _: &EnvName,
        ids: &[&KeyId],
    ) -> Result<HashMap<KeyId, LastUse>, StoreError> {
        let ids: Vec<KeyId> = ids.iter().map(|id| (*id).clone()).collect();
        self.with(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT last_used_at, last_refused_at FROM usage_last WHERE key_id = ?1",
                )
                .map_err(backend)?;
            let mut found = HashMap::new();
            for id in ids {
                let row = statement
                    .query_row([id.as_str()], |row| {
                        Ok((
                            row.get::<_, Option<String>>(0)?,
                            row.get::<_, Option<String>>(1)?,
                        ))
                    })
                    .optional()
                    .map_err(backend)?;
                if let Some((used, refused)) = row {
                    let last = LastUse {
                        last_used_at: used.as_deref().map(time).transpose()?,
                        last_refused_at: refused.as_deref().map(time).transpose()?,
                    };
                    found.insert(id, last);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn record_last_use(&self, owner: &UsageOwner, last: LastUse) -> Result<(), StoreError> {
        let id = owner.key_id().clone();
        self.with(move |conn| raise_last_use(conn, &id, last)).await
    }
}

#[cfg(test)]
mod tests {
    use crate::domain::{
        Actor, EnvName, Issued, Revocation, create_environment, create_key, revoke,
    };
    use crate::testing::orders_key;

    use super::*;

    /// Makes an environment in `store` and reads its default key back by hash.
    async fn reads_what_it_wrote(store: &SqliteStore) {
        let mint = crate::mint();
        let production = EnvName::parse("production").unwrap();
        let issued = create_environment(&production, Actor::operator("t"), &mint, crate::now());
        store.apply(&issued.change).await.unwrap();
        let read = store.key_by_hash(&issued.key.hash).await.unwrap();
        assert_eq!(read.map(|k| k.id), Some(issued.key.id));
    }

    /// Stores a fresh `orders:read` key of `production` in `store`, the environment first.
    async fn stored(store: &SqliteStore) -> Issued {
        let (mint, now) = (crate::mint(), crate::now());
        let production = EnvName::parse("production").unwrap();
        let made = create_environment(&production, Actor::operator("t"), &mint, now);
        store.apply(&made.change).await.unwrap();
        crate::testing::stored_key(store, &production, orders_key("k"), &mint, now).await
    }

    #[tokio::test]
    async fn a_key_read_by_hash_is_kept_until_the_next_write_and_a_revocation_holds_at_once() {
        let store = SqliteStore::in_memory().unwrap();
        let issued = stored(&store).await;
        let hash = &issued.key.hash;
        assert_eq!(
            store.key_by_hash(hash).await.unwrap(),
            Some(issued.key.clone())
        );
        // Kept: the row is gone from under it and the store still answers it, for a while.
        store
            .conn
            .lock()
            .unwrap()
            .execute("DELETE FROM keys WHERE hash = ?1", [hash.to_hex()])
            .unwrap();
        assert_eq!(
            store.key_by_hash(hash).await.unwrap(),
            Some(issued.key.clone())
        );
        std::thread::sleep(KNOWN_FOR);
        assert_eq!(
            store.key_by_hash(hash).await.unwrap(),
            None,
            "a key changed behind the store's back is read again once its time is up"
        );

        let store = SqliteStore::in_memory().unwrap();
        let issued = stored(&store).await;
        let hash = &issued.key.hash;
        assert!(
            store
                .key_by_hash(hash)
                .await
                .unwrap()
                .unwrap()
                .revoked_at
                .is_none()
        );
        let Revocation::Revoked { change, .. } = revoke(
            &issued.key,
            Actor::operator("t"),
            &crate::mint(),
            crate::now(),
        )
        .unwrap() else {
            panic!("an active key is revoked")
        };
        store.apply(&change).await.unwrap();
        let read = store.key_by_hash(hash).await.unwrap().unwrap();
        assert!(
            read.revoked_at.is_some(),
            "the next check reads the revocation"
        );
    }

    #[tokio::test]
    async fn a_read_that_a_write_overtook_keeps_nothing_and_an_unknown_hash_is_never_kept() {
        let store = SqliteStore::in_memory().unwrap();
        let issued = stored(&store).await;
        let known = store.known.as_deref().unwrap();
        let Err(before) = known.get(&issued.key.hash, Instant::now()) else {
            panic!("nothing is kept before a read")
        };
        known.forget();
        known.keep(before, &issued.key, Instant::now());
        assert_eq!(known.get(&issued.key.hash, Instant::now()), Err(before + 1));

        let production = EnvName::parse("production").unwrap();
        let (mint, now) = (crate::mint(), crate::now());
        let never_stored = create_key(
            &production,
            orders_key("u"),
            Actor::operator("t"),
            &mint,
            now,
        )
        .unwrap();
        assert_eq!(
            store.key_by_hash(&never_stored.key.hash).await.unwrap(),
            None
        );
        assert!(known.lock().keys.is_empty());
    }

    #[tokio::test]
    async fn a_file_has_one_owner_and_only_the_owner_keeps_keys() {
        let dir = std::env::temp_dir().join(format!("keyward-owned-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("owned.db");
        let owner = SqliteStore::open_owned(&path).unwrap();
        let Err(refused) = SqliteStore::open_owned(&path) else {
            panic!("a second owner is refused")
        };
        assert!(
            crate::error_chain(&refused).contains("another process serves"),
            "{}",
            crate::error_chain(&refused)
        );
        let link = dir.join("link.db");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(
            SqliteStore::open_owned(&link).is_err(),
            "another name for the same file is the same owner's"
        );
        let beside = SqliteStore::open(&path).unwrap();
        assert!(owner.known.is_some() && beside.known.is_none());
        drop(owner);
        SqliteStore::open_owned(&path).expect("the lock goes with its owner");
        drop(beside);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_file_reads_beside_its_writer_and_a_memory_database_on_its_one_connection() {
        let dir = std::env::temp_dir().join(format!("keyward-sqlite-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = SqliteStore::open(&dir.join("readers.db")).unwrap();
        assert_eq!(file.readers.len(), READERS);
        reads_what_it_wrote(&file).await;
        drop(file);
        std::fs::remove_dir_all(&dir).unwrap();

        let named = SqliteStore::open(Path::new(":memory:")).unwrap();
        assert!(
            named.readers.is_empty(),
            "another connection would be another database"
        );
        reads_what_it_wrote(&named).await;
        reads_what_it_wrote(&SqliteStore::in_memory().unwrap()).await;
    }
}
