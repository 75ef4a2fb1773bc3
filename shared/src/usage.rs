//! Counting checks off the check's path: each check of a known key is added to a tally in
//! memory, and a key's tally is written to the store at most once per interval (a minute,
//! [`DEFAULT_WRITE_EVERY`], unless `KEYWARD_USAGE_WRITE_EVERY` says otherwise), by a task of
//! its own that the check does not wait for.
//!
//! A key's first check in a process is written at once, so that a key seldom used shows its
//! last use as soon as that write lands (on Lambda, a write still on its way when the instance
//! is frozen lands when it thaws); later checks are held until the interval has passed since
//! that write, and go with the next check of any key once they fall due, or with a sweep
//! (`keyward serve`'s timer), or with [`Usage::flush_all`] when the process stops. A write that
//! fails is put back whole and goes with the next one.
//!
//! What can be lost is what a process holds when it dies without [`Usage::flush_all`]: the
//! checks since each key's last write. README.md, "Usage", says what that means on Lambda.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::TimeDelta;
use futures_util::StreamExt;

use crate::domain::{EnvName, KeyId, SEEN_LIMIT, Timestamp, UsageTally, hour_of};
use crate::store::UsageStore;

/// The least time between two writes of one key's counts from one process, by default.
pub const DEFAULT_WRITE_EVERY: TimeDelta = TimeDelta::minutes(1);

/// The variable that sets the interval between two writes of a key's counts, in seconds.
pub const WRITE_EVERY_VAR: &str = "KEYWARD_USAGE_WRITE_EVERY";

/// Reads `KEYWARD_USAGE_WRITE_EVERY`: whole seconds from 1 to 3600, a minute when unset. A
/// shorter interval shows last use sooner and loses less when a process dies, for one write
/// per key per interval.
pub fn write_every_from_env() -> Result<TimeDelta, String> {
    parse_write_every(std::env::var(WRITE_EVERY_VAR).ok().as_deref())
}

fn parse_write_every(value: Option<&str>) -> Result<TimeDelta, String> {
    let Some(value) = value else {
        return Ok(DEFAULT_WRITE_EVERY);
    };
    value
        .parse::<i64>()
        .ok()
        .filter(|s| (1..=3600).contains(s))
        .map(TimeDelta::seconds)
        .ok_or_else(|| format!("{WRITE_EVERY_VAR} is whole seconds from 1 to 3600, not {value:?}"))
}

/// Where a check reports the key it saw. [`Usage`] counts; [`NotCounted`] does nothing.
pub trait Counter: Send + Sync {
    /// Counts one check at `now` of `key`, a key of `environment`, accepted or refused, and
    /// notes `source`, the address an accepted check came from, when the platform gave one.
    /// It never waits on the store.
    fn count(
        &self,
        environment: &EnvName,
        key: &KeyId,
        accepted: bool,
        source: Option<IpAddr>,
        now: Timestamp,
    );
}

/// A counter that counts nothing, for tools and tests that check keys without usage.
#[derive(Debug, Clone, Copy, Default)]
pub struct NotCounted;

impl Counter for NotCounted {
    fn count(&self, _: &EnvName, _: &KeyId, _: bool, _: Option<IpAddr>, _: Timestamp) {}
}

/// One key's counts not yet written.
struct Pending {
    tally: UsageTally,
    /// When its counts were last taken for a write; `None` before the first.
    taken_at: Option<Timestamp>,
    /// The addresses already put in a tally this hour (the hour, and at most [`SEEN_LIMIT`]
    /// of them; later ones are not sent), so that a key checked from the same few addresses
    /// all hour costs one write of them, not one a minute. On DynamoDB a write of them that
    /// fails loses them until the next hour; on SQLite they go with the counts.
    noted: (Timestamp, BTreeSet<IpAddr>),
}

impl Pending {
    /// A key's first check in this process, as a fresh entry.
    fn new(environment: &EnvName, key: &KeyId) -> Self {
        Self {
            tally: UsageTally::new(environment.clone(), key.clone()),
            taken_at: None,
            noted: (Timestamp::MIN_UTC, BTreeSet::new()),
        }
    }

    /// Puts `address` in the tally unless this hour's tallies already carried it.
    fn saw(&mut self, address: IpAddr, now: Timestamp) {
        let (hour, noted) = &mut self.noted;
        let current = hour_of(now);
        if *hour != current {
            *hour = current;
            noted.clear();
        }
        // Past the limit the hour's record is full anyway: nothing more is sent.
        if noted.len() < SEEN_LIMIT && noted.insert(address.to_canonical()) {
            self.tally.saw(address, now);
        }
    }

    /// When its held counts may next be written: at once before its first write, else an
    /// interval after the last. `None` when it holds nothing.
    fn due_at(&self, every: TimeDelta) -> Option<Timestamp> {
        if self.tally.checks() == 0 {
            return None;
        }
        Some(self.taken_at.map_or(Timestamp::MIN_UTC, |at| at + every))
    }
}

/// How many writes one process sends at once when it writes many keys' counts.
const WRITES_AT_ONCE: usize = 32;

struct Inner {
    store: Arc<dyn UsageStore>,
    every: TimeDelta,
    /// The template's function whose writes these are, where one process counts for more
    /// than one (`keyward serve`); a Lambda function's are its own anyway. Only the record of
    /// AWS calls reads it.
    #[cfg_attr(not(feature = "aws"), allow(dead_code))]
    function: Option<&'static str>,
    pending: Mutex<Tallies>,
    /// Writes started and not yet finished, so that [`Usage::flush_all`] can wait for them.
    writing: AtomicUsize,
    /// The checks those writes carry, so that what a stop could not write is reported whole.
    in_flight: AtomicU64,
    finished: tokio::sync::Notify,
}

#[derive(Default)]
struct Tallies {
    keys: HashMap<KeyId, Pending>,
    /// The earliest time at which some key's held counts fall due.
    next_due: Option<Timestamp>,
}

/// The earlier of a due time so far, if there is one, and another.
fn earliest(so_far: Option<Timestamp>, due: Timestamp) -> Timestamp {
    so_far.map_or(due, |n| n.min(due))
}

impl Tallies {
    /// Takes the tallies due at `now` (all of them with `every_one`), marks them taken, drops
    /// the keys that hold nothing and could be written at once anyway, and works out when the
    /// next one falls due.
    fn take(&mut self, now: Timestamp, every: TimeDelta, every_one: bool) -> Vec<UsageTally> {
        let mut taken = Vec::new();
        let mut next_due: Option<Timestamp> = None;
        self.keys.retain(|_, pending| {
            match pending.due_at(every) {
                Some(due) if every_one || due <= now => {
                    pending.taken_at = Some(now);
                    let empty = UsageTally::new(
                        pending.tally.environment.clone(),
                        pending.tally.key_id.clone(),
                    );
                    taken.push(std::mem::replace(&mut pending.tally, empty));
                }
                Some(due) => next_due = Some(earliest(next_due, due)),
                None => {}
            }
            pending.tally.checks() > 0 || pending.taken_at.is_some_and(|at| at + every > now)
        });
        self.next_due = next_due;
        taken
    }
}

/// A process's usage counter: tallies in memory, written to `store` in the background.
#[derive(Clone)]
pub struct Usage(Arc<Inner>);

impl Usage {
    /// A counter that writes each key's counts to `store` at most once `every`.
    pub fn new(store: Arc<dyn UsageStore>, every: TimeDelta) -> Self {
        Self::counting(store, every, None)
    }

    /// [`Usage::new`] for the checks that the template's `function` makes, in a process that
    /// counts for several: its writes are recorded as that function's AWS calls.
    pub fn for_function(
        store: Arc<dyn UsageStore>,
        every: TimeDelta,
        function: &'static str,
    ) -> Self {
        Self::counting(store, every, Some(function))
    }

    fn counting(
        store: Arc<dyn UsageStore>,
        every: TimeDelta,
        function: Option<&'static str>,
    ) -> Self {
        Self(Arc::new(Inner {
            store,
            every,
            function,
            pending: Mutex::new(Tallies::default()),
            writing: AtomicUsize::new(0),
            in_flight: AtomicU64::new(0),
            finished: tokio::sync::Notify::new(),
        }))
    }

    /// A counter that writes to `store` at the interval `KEYWARD_USAGE_WRITE_EVERY` sets; a
    /// bad value stops the cold start with a message that names the variable.
    pub fn from_env(store: Arc<dyn UsageStore>) -> Result<Self, String> {
        Ok(Self::new(store, write_every_from_env()?))
    }

    /// The least time between two writes of one key's counts.
    pub fn every(&self) -> TimeDelta {
        self.0.every
    }

    fn tallies(&self) -> std::sync::MutexGuard<'_, Tallies> {
        self.0.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts back the counts of a write that failed, so that the next write carries them.
    fn put_back(&self, tally: UsageTally) {
        let every = self.0.every;
        let mut tallies = self.tallies();
        let pending = tallies
            .keys
            .entry(tally.key_id.clone())
            .or_insert_with(|| Pending::new(&tally.environment, &tally.key_id));
        pending.tally.merge(tally);
        if let Some(due) = pending.due_at(every) {
            tallies.next_due = Some(earliest(tallies.next_due, due));
        }
    }

    /// Writes `tallies`, each hour of each as one write of its own, up to [`WRITES_AT_ONCE`]
    /// at a time; a write that fails is put back whole, and one that succeeds is never put
    /// back. A write that failed after it had landed (its answer lost) counts twice: the safe
    /// direction, since a key in use never looks quiet for it.
    async fn write(&self, tallies: Vec<UsageTally>) {
        let writes = tallies.into_iter().flat_map(UsageTally::by_hour);
        futures_util::stream::iter(writes)
            .for_each_concurrent(WRITES_AT_ONCE, |tally| async move {
                if let Err(e) = self.0.store.add_usage(&tally).await {
                    tracing::warn!(key_id = %tally.key_id, checks = tally.checks(), error = %crate::error_chain(&e), "usage not written; it goes with the next write");
                    self.put_back(tally);
                }
            })
            .await;
    }

    /// Starts writing `tallies` on a task of its own.
    fn spawn(&self, tallies: Vec<UsageTally>) {
        if tallies.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tallies.into_iter().for_each(|t| self.put_back(t));
            return;
        };
        let checks: u64 = tallies.iter().map(UsageTally::checks).sum();
        self.0.writing.fetch_add(1, Ordering::SeqCst);
        self.0.in_flight.fetch_add(checks, Ordering::SeqCst);
        let usage = self.clone();
        let work = async move {
            usage.write(tallies).await;
            usage.0.in_flight.fetch_sub(checks, Ordering::SeqCst);
            usage.0.writing.fetch_sub(1, Ordering::SeqCst);
            usage.0.finished.notify_waiters();
        };
        #[cfg(feature = "aws")]
        let work = crate::aws::calls::acting_as_if(self.0.function, work);
        runtime.spawn(work);
    }

    /// Writes every tally that is due at `now`, in the background: what `keyward serve`'s
    /// timer calls, so that an idle server's counts go out when they fall due.
    pub fn sweep(&self, now: Timestamp) {
        let due = self.tallies().take(now, self.0.every, false);
        self.spawn(due);
    }

    /// Writes every tally, due or not, and waits for every write under way, for at most
    /// `within`: what a process does when it is told to stop. Answers how many checks are
    /// not known to be written when it returns: held, put back, or on a write still going.
    pub async fn flush_all(&self, within: std::time::Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + within;
        let all = self.tallies().take(crate::now(), self.0.every, true);
        self.spawn(all);
        while self.0.writing.load(Ordering::SeqCst) > 0 {
            let finished = self.0.finished.notified();
            if self.0.writing.load(Ordering::SeqCst) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, finished).await.is_err() {
                break;
            }
        }
        self.unwritten() + self.0.in_flight.load(Ordering::SeqCst)
    }

    /// How many counted checks are held and not yet on their way: held, or put back after a
    /// failed write.
    pub fn unwritten(&self) -> u64 {
        self.tallies().keys.values().map(|p| p.tally.checks()).sum()
    }
}

impl Counter for Usage {
    fn count(
        &self,
        environment: &EnvName,
        key: &KeyId,
        accepted: bool,
        source: Option<IpAddr>,
        now: Timestamp,
    ) {
        let every = self.0.every;
        let due = {
            let mut tallies = self.tallies();
            // The key is cloned only the first time it is seen, not on every check.
            if !tallies.keys.contains_key(key) {
                tallies
                    .keys
                    .insert(key.clone(), Pending::new(environment, key));
            }
            let Some(pending) = tallies.keys.get_mut(key) else {
                return;
            };
            pending.tally.count(accepted, now);
            if let (true, Some(address)) = (accepted, source) {
                pending.saw(address, now);
            }
            if let Some(due) = pending.due_at(every) {
                tallies.next_due = Some(earliest(tallies.next_due, due));
            }
            // Every tally that has fallen due goes now, this key's and any other's, so that a
            // held count waits no longer than the interval while the process takes checks.
            if tallies.next_due.is_some_and(|n| n <= now) {
                tallies.take(now, every, false)
            } else {
                Vec::new()
            }
        };
        self.spawn(due);
    }
}

/// How long a Lambda function's shutdown may spend writing: Lambda allows 500 ms after its
/// `SIGTERM` to a function with internal extensions, then kills it.
#[cfg(feature = "dynamodb")]
pub const SHUTDOWN_BUDGET: std::time::Duration = std::time::Duration::from_millis(400);

/// The internal extension's name, unique within the function as Lambda requires.
#[cfg(feature = "dynamodb")]
const EXTENSION_NAME: &str = "keyward-usage-flush";

/// Why the shutdown flush's extension could not be registered; the cold start stops on it.
#[cfg(feature = "dynamodb")]
pub type ExtensionError = Box<dyn std::error::Error + Send + Sync>;

/// How long the registration may take before the cold start stops on it.
#[cfg(feature = "dynamodb")]
const REGISTRATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Registers the internal extension with Lambda's Extensions API, asking for no events, and
/// then asks for its next event, which tells Lambda the extension is ready and is never
/// answered. Both go over one HTTP/1.1 connection to the Runtime API, without the pool and
/// layers of a general client: this is on the cold start's path. A wait that fails (its
/// connection dropped) is sent again on a new one, twice at most, and said on stderr, since
/// Lambda's init ends only when every extension waits.
#[cfg(feature = "dynamodb")]
async fn register_extension() -> Result<(), ExtensionError> {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use hyper::client::conn::http1::SendRequest;

    async fn connect(api: &str) -> Result<SendRequest<Full<Bytes>>, ExtensionError> {
        let stream = tokio::net::TcpStream::connect(api).await?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(connection);
        Ok(sender)
    }

    let api = std::env::var("AWS_LAMBDA_RUNTIME_API")
        .map_err(|_| "AWS_LAMBDA_RUNTIME_API is not set: this runs only on Lambda")?;
    let registering = async {
        let mut sender = connect(&api).await?;
        let register = hyper::Request::post("/2020-01-01/extension/register")
            .header(hyper::header::HOST, &api)
            .header("Lambda-Extension-Name", EXTENSION_NAME)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(br#"{"events":[]}"#)))?;
        let answer = sender.send_request(register).await?;
        let status = answer.status();
        let id = answer
            .headers()
            .get("Lambda-Extension-Identifier")
            .and_then(|id| id.to_str().ok())
            .map(str::to_owned);
        let body = answer.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            let body = String::from_utf8_lossy(&body);
            return Err(
                format!("the Extensions API refused the registration: {status} {body}").into(),
            );
        }
        let id = id.ok_or("the Extensions API accepted the registration without an identifier")?;
        Ok::<_, ExtensionError>((sender, id))
    };
    let (mut sender, id) = tokio::time::timeout(REGISTRATION_TIMEOUT, registering)
        .await
        .map_err(|_| "the Extensions API did not answer the registration within 2 s")??;
    tokio::spawn(async move {
        let next = || {
            hyper::Request::get("/2020-01-01/extension/event/next")
                .header(hyper::header::HOST, &api)
                .header("Lambda-Extension-Identifier", &id)
                .body(Full::default())
        };
        for attempt in 1..=3 {
            if attempt > 1 {
                match connect(&api).await {
                    Ok(fresh) => sender = fresh,
                    Err(e) => {
                        eprintln!("keyward: the usage flush's extension cannot reconnect: {e}");
                        continue;
                    }
                }
            }
            let Ok(request) = next() else { return };
            // Answered only if Lambda ever sends this extension an event, which it does not.
            if let Err(e) = sender.send_request(request).await {
                eprintln!("keyward: the usage flush's extension lost its wait for events: {e}");
            }
        }
    });
    Ok(())
}

/// On Lambda, the shutdown flush: Lambda sends `SIGTERM` only to a function with an extension,
/// so this registers an internal one that asks for no events, and writes every tally of the
/// counter it is given when the signal comes. The registration, a call to the Extensions API,
/// is begun first ([`ShutdownFlush::begin`]) and runs while the cold start builds its
/// clients; [`ShutdownFlush::of`] then names the counter and waits for it, since an
/// extension must be registered before the runtime asks for its first event.
#[cfg(feature = "dynamodb")]
pub struct ShutdownFlush {
    registered: tokio::task::JoinHandle<Result<(), ExtensionError>>,
    usage: Arc<std::sync::OnceLock<Usage>>,
}

#[cfg(feature = "dynamodb")]
impl ShutdownFlush {
    /// Starts registering the extension and listening for the signals, on a task of its own.
    pub fn begin() -> Self {
        let usage = Arc::new(std::sync::OnceLock::<Usage>::new());
        let flushed = Arc::clone(&usage);
        let registered = tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            register_extension().await?;
            let mut terminate = signal(SignalKind::terminate())?;
            let mut interrupt = signal(SignalKind::interrupt())?;
            tokio::spawn(async move {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = interrupt.recv() => {}
                }
                if let Some(usage) = flushed.get() {
                    let left = usage.flush_all(SHUTDOWN_BUDGET).await;
                    if left > 0 {
                        tracing::warn!(checks = left, "usage not written before shutdown");
                    }
                }
                std::process::exit(0);
            });
            Ok(())
        });
        Self { registered, usage }
    }

    /// Names the counter that the signal flushes, and waits until the extension is registered.
    pub async fn of(self, usage: &Usage) -> Result<(), ExtensionError> {
        let _ = self.usage.set(usage.clone());
        self.registered.await?
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::AtomicBool;

    use async_trait::async_trait;

    use super::*;
    use crate::domain::{HourlyUsage, LastUse, Mint, hour_of};
    use crate::store::{SqliteStore, StoreError, UsageOwner};

    /// SQLite, with every usage write counted, and the writes failing while `failing` is set,
    /// or those of the hour `failing_hour` names.
    struct Watched {
        inner: SqliteStore,
        writes: AtomicUsize,
        /// How many addresses the writes carried, all told.
        addresses: AtomicUsize,
        failing: AtomicBool,
        failing_hour: Mutex<Option<Timestamp>>,
    }

    #[async_trait]
    impl UsageStore for Watched {
        async fn add_usage(&self, tally: &UsageTally) -> Result<(), StoreError> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            let carried: usize = tally.seen.values().map(BTreeSet::len).sum();
            self.addresses.fetch_add(carried, Ordering::SeqCst);
            let hour = *self.failing_hour.lock().unwrap();
            if self.failing.load(Ordering::SeqCst)
                || hour.is_some_and(|h| tally.hours.contains_key(&h))
            {
                return Err(StoreError::Backend("throttled".into()));
            }
            self.inner.add_usage(tally).await
        }
        async fn hourly_usage(
            &self,
            environment: &EnvName,
            id: &KeyId,
            since: Timestamp,
        ) -> Result<Vec<HourlyUsage>, StoreError> {
            self.inner.hourly_usage(environment, id, since).await
        }
        async fn seen_addresses(
            &self,
            environment: &EnvName,
            id: &KeyId,
            since: Timestamp,
        ) -> Result<Vec<(Timestamp, std::net::IpAddr)>, StoreError> {
            self.inner.seen_addresses(environment, id, since).await
        }
        async fn last_use(
            &self,
            environment: &EnvName,
            ids: &[&KeyId],
        ) -> Result<HashMap<KeyId, LastUse>, StoreError> {
            self.inner.last_use(environment, ids).await
        }
        async fn record_last_use(
            &self,
            owner: &UsageOwner,
            last: LastUse,
        ) -> Result<(), StoreError> {
            self.inner.record_last_use(owner, last).await
        }
    }

    fn production() -> EnvName {
        EnvName::parse("production").unwrap()
    }

    fn watched() -> Arc<Watched> {
        Arc::new(Watched {
            inner: SqliteStore::in_memory().unwrap(),
            writes: AtomicUsize::new(0),
            addresses: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
            failing_hour: Mutex::new(None),
        })
    }

    /// Waits until no write is under way.
    async fn settled(usage: &Usage) {
        while usage.0.writing.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    async fn accepted(store: &Watched, id: &KeyId, now: Timestamp) -> u64 {
        let hours = store
            .hourly_usage(&production(), id, now - TimeDelta::days(1))
            .await
            .unwrap();
        hours.iter().map(|h| h.accepted).sum()
    }

    #[tokio::test]
    async fn a_key_is_written_at_once_then_at_most_once_a_minute_and_nothing_is_lost() {
        let store = watched();
        let usage = Usage::new(store.clone(), DEFAULT_WRITE_EVERY);
        let mint = Mint::new(Box::new(crate::OsEntropy));
        let now: Timestamp = "2026-11-29T10:00:30Z".parse().unwrap();
        let key = KeyId::generate(&mint, now);
        for _ in 0..10_000 {
            usage.count(&production(), &key, true, None, now);
        }
        settled(&usage).await;
        assert_eq!(
            store.writes.load(Ordering::SeqCst),
            1,
            "the first check only"
        );
        assert_eq!(accepted(&store, &key, now).await, 1);
        assert_eq!(usage.unwritten(), 9_999);

        let almost = now + DEFAULT_WRITE_EVERY - TimeDelta::milliseconds(1);
        usage.count(&production(), &key, true, None, almost);
        settled(&usage).await;
        assert_eq!(
            store.writes.load(Ordering::SeqCst),
            1,
            "a minute has not passed"
        );

        let later = now + DEFAULT_WRITE_EVERY;
        usage.count(&production(), &key, false, None, later);
        settled(&usage).await;
        assert_eq!(store.writes.load(Ordering::SeqCst), 2);
        assert_eq!(accepted(&store, &key, now).await, 10_001);
        assert_eq!(usage.unwritten(), 0);
        let last = store.last_use(&production(), &[&key]).await.unwrap()[&key];
        assert_eq!(last.last_used_at, Some(minute("2026-11-29T10:01:00Z")));
        assert_eq!(last.last_refused_at, Some(minute("2026-11-29T10:01:00Z")));
        assert_eq!(hour_of(later), minute("2026-11-29T10:00:00Z"));
    }

    fn minute(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn a_sweep_writes_a_quiet_keys_counts_and_a_failed_write_is_carried_by_the_next() {
        let store = watched();
        let usage = Usage::new(store.clone(), DEFAULT_WRITE_EVERY);
        let mint = Mint::new(Box::new(crate::OsEntropy));
        let now: Timestamp = "2026-11-29T10:00:00Z".parse().unwrap();
        let (quiet, busy) = (KeyId::generate(&mint, now), KeyId::generate(&mint, now));
        store.failing.store(true, Ordering::SeqCst);
        usage.count(&production(), &quiet, true, None, now);
        usage.count(&production(), &quiet, true, None, now);
        settled(&usage).await;
        assert_eq!(usage.unwritten(), 2, "the failed write is put back");

        store.failing.store(false, Ordering::SeqCst);
        usage.count(
            &production(),
            &busy,
            true,
            None,
            now + TimeDelta::seconds(61),
        );
        settled(&usage).await;
        assert_eq!(
            accepted(&store, &quiet, now).await,
            2,
            "another key's check sweeps the quiet key's due counts"
        );
        assert_eq!(usage.unwritten(), 0);

        usage.count(
            &production(),
            &quiet,
            true,
            None,
            now + TimeDelta::seconds(70),
        );
        usage.sweep(now + TimeDelta::seconds(80));
        settled(&usage).await;
        assert_eq!(usage.unwritten(), 1, "written a minute ago: it waits");
        usage.sweep(now + TimeDelta::seconds(121));
        settled(&usage).await;
        assert_eq!(
            (usage.unwritten(), accepted(&store, &quiet, now).await),
            (0, 3)
        );
    }

    #[tokio::test]
    async fn only_an_accepted_checks_address_is_written_with_its_counts() {
        let store = watched();
        let usage = Usage::new(store.clone(), DEFAULT_WRITE_EVERY);
        let now: Timestamp = "2026-11-29T10:15:00Z".parse().unwrap();
        let key = KeyId::generate(&crate::mint(), now);
        let (inside, outside): (IpAddr, IpAddr) = (
            "198.51.100.7".parse().unwrap(),
            "203.0.113.9".parse().unwrap(),
        );
        usage.count(&production(), &key, true, Some(inside), now);
        usage.count(&production(), &key, false, Some(outside), now);
        usage.count(&production(), &key, true, None, now);
        assert_eq!(usage.flush_all(std::time::Duration::from_secs(5)).await, 0);
        assert_eq!(accepted(&store, &key, now).await, 2);
        let seen = store
            .inner
            .seen_addresses(&production(), &key, now)
            .await
            .unwrap();
        assert_eq!(seen, [(crate::domain::hour_of(now), inside)]);
        assert_eq!(store.addresses.load(Ordering::SeqCst), 1);

        // The same address again within the hour goes with no write; a new one, or the
        // same in the next hour, goes once.
        let later = now + TimeDelta::seconds(1);
        usage.count(&production(), &key, true, Some(inside), later);
        usage.count(&production(), &key, true, Some(outside), later);
        usage.count(&production(), &key, true, Some(outside), later);
        assert_eq!(usage.flush_all(std::time::Duration::from_secs(5)).await, 0);
        assert_eq!(store.addresses.load(Ordering::SeqCst), 2);
        let next_hour = crate::domain::hour_of(now) + TimeDelta::hours(1);
        usage.count(&production(), &key, true, Some(inside), next_hour);
        assert_eq!(usage.flush_all(std::time::Duration::from_secs(5)).await, 0);
        assert_eq!(store.addresses.load(Ordering::SeqCst), 3);

        // A write that fails puts its address back, and the next write carries it.
        store.failing.store(true, Ordering::SeqCst);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        usage.count(&production(), &key, true, Some(v6), next_hour);
        assert_eq!(usage.flush_all(std::time::Duration::from_secs(5)).await, 1);
        store.failing.store(false, Ordering::SeqCst);
        assert_eq!(usage.flush_all(std::time::Duration::from_secs(5)).await, 0);
        let seen = store
            .inner
            .seen_addresses(&production(), &key, next_hour)
            .await
            .unwrap();
        assert!(seen.contains(&(next_hour, v6)), "{seen:?}");
    }

    #[tokio::test]
    async fn flushing_writes_every_tally_due_or_not() {
        let store = watched();
        let usage = Usage::new(store.clone(), DEFAULT_WRITE_EVERY);
        let mint = Mint::new(Box::new(crate::OsEntropy));
        let now = crate::now();
        let keys: Vec<KeyId> = (0..5).map(|_| KeyId::generate(&mint, now)).collect();
        for key in &keys {
            for _ in 0..3 {
                usage.count(&production(), key, true, None, now);
            }
        }
        assert_eq!(usage.flush_all(std::time::Duration::from_secs(5)).await, 0);
        for key in &keys {
            assert_eq!(accepted(&store, key, now).await, 3);
        }
        store.failing.store(true, Ordering::SeqCst);
        usage.count(
            &production(),
            &keys[0],
            false,
            None,
            now + TimeDelta::hours(1),
        );
        assert_eq!(
            usage.flush_all(std::time::Duration::from_secs(5)).await,
            1,
            "what could not be written is reported"
        );
    }

    #[tokio::test]
    async fn a_held_count_goes_with_the_first_check_of_any_key_once_it_is_due() {
        let store = watched();
        let usage = Usage::new(store.clone(), DEFAULT_WRITE_EVERY);
        let mint = Mint::new(Box::new(crate::OsEntropy));
        let t0: Timestamp = "2026-11-29T10:00:00Z".parse().unwrap();
        let keys: Vec<KeyId> = (0..3).map(|_| KeyId::generate(&mint, t0)).collect();
        usage.count(&production(), &keys[0], true, None, t0);
        usage.count(
            &production(),
            &keys[0],
            true,
            None,
            t0 + TimeDelta::seconds(1),
        );
        usage.count(
            &production(),
            &keys[1],
            true,
            None,
            t0 + TimeDelta::seconds(59),
        );
        settled(&usage).await;
        assert_eq!(accepted(&store, &keys[0], t0).await, 1, "not due yet");
        usage.count(
            &production(),
            &keys[2],
            true,
            None,
            t0 + TimeDelta::seconds(60),
        );
        settled(&usage).await;
        assert_eq!(
            accepted(&store, &keys[0], t0).await,
            2,
            "due a minute after its write, and written by the next check of any key"
        );
        assert_eq!(usage.unwritten(), 0);
    }

    #[tokio::test]
    async fn a_write_that_fails_for_one_hour_puts_back_only_that_hour() {
        let store = watched();
        let usage = Usage::new(store.clone(), DEFAULT_WRITE_EVERY);
        let mint = Mint::new(Box::new(crate::OsEntropy));
        let key = KeyId::generate(&mint, crate::now());
        usage.count(
            &production(),
            &key,
            true,
            None,
            minute("2026-11-29T10:59:30Z"),
        );
        settled(&usage).await;
        usage.count(
            &production(),
            &key,
            true,
            None,
            minute("2026-11-29T10:59:50Z"),
        );
        usage.count(
            &production(),
            &key,
            true,
            None,
            minute("2026-11-29T11:00:10Z"),
        );
        *store.failing_hour.lock().unwrap() = Some(minute("2026-11-29T11:00:00Z"));
        let within = std::time::Duration::from_secs(5);
        assert_eq!(
            usage.flush_all(within).await,
            1,
            "the 11:00 hour is put back"
        );
        let since = minute("2026-11-29T10:00:00Z");
        assert_eq!(accepted(&store, &key, since).await, 2);
        *store.failing_hour.lock().unwrap() = None;
        assert_eq!(usage.flush_all(within).await, 0);
        assert_eq!(
            accepted(&store, &key, since).await,
            3,
            "the hour written the first time is not written again"
        );
    }

    #[tokio::test]
    async fn a_stop_writes_many_keys_at_once_and_reports_what_it_could_not() {
        let store = watched();
        let usage = Usage::new(store.clone(), DEFAULT_WRITE_EVERY);
        let mint = Mint::new(Box::new(crate::OsEntropy));
        let now = crate::now();
        let keys: Vec<KeyId> = (0..300).map(|_| KeyId::generate(&mint, now)).collect();
        for key in &keys {
            usage.count(&production(), key, true, None, now);
            usage.count(&production(), key, true, None, now);
        }
        assert_eq!(usage.flush_all(std::time::Duration::from_secs(30)).await, 0);
        for key in &keys {
            assert_eq!(accepted(&store, key, now).await, 2);
        }
        store.failing.store(true, Ordering::SeqCst);
        for key in &keys[..10] {
            usage.count(&production(), key, false, None, now + TimeDelta::seconds(1));
        }
        assert_eq!(
            usage.flush_all(std::time::Duration::from_secs(30)).await,
            10
        );
    }

    #[test]
    fn the_interval_is_whole_seconds_from_one_to_an_hour() {
        assert_eq!(parse_write_every(None), Ok(DEFAULT_WRITE_EVERY));
        assert_eq!(parse_write_every(Some("1")), Ok(TimeDelta::seconds(1)));
        assert_eq!(parse_write_every(Some("3600")), Ok(TimeDelta::hours(1)));
        for bad in ["0", "3601", "-5", "1.5", "", "60s"] {
            let refused = parse_write_every(Some(bad)).unwrap_err();
            assert!(refused.contains(WRITE_EVERY_VAR), "{bad}: {refused}");
        }
    }
}
