//! What stands between an unauthenticated request and a password check: a size limit, a
//! same-origin check, brute-force throttling per client address and per username, and a
//! bounded pool of argon2 workers.
//!
//! An argon2 check costs about 19 MiB and tens of milliseconds of one core, so each of these
//! refuses a request *before* that cost: a password over [`MAX_PASSWORD_BYTES`] is `422`, a
//! throttled attempt is `429` with `Retry-After`, and when every worker is busy and the queue
//! is full the answer is `503` with `Retry-After` at once. Unknown usernames are checked
//! against a dummy hash by the same pool, so they cost what a real check costs (timing does
//! not tell which usernames exist) and are bounded the same way.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use argon2::password_hash::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use axum::http::HeaderMap;
use axum::http::header::{HOST, ORIGIN};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// Longer passwords are refused with `422` before any hashing.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Longer usernames are refused with `422`: none exists, and the throttle keys them.
pub const MAX_USERNAME_BYTES: usize = 128;

/// Why a login was refused, before or after the password check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    /// 401: unknown user or wrong password (one answer for both).
    InvalidCredentials,
    /// 401: the password is right but the account is deactivated.
    Deactivated,
    /// 422: the password or username is longer than any real one.
    TooLong(&'static str),
    /// 429: too many attempts from this address or for this username; retry after this long.
    Throttled(Duration),
    /// 503: every password worker is busy and the queue is full.
    Busy,
    /// 500: the user directory failed.
    StoreUnavailable,
}

impl LoginRefusal {
    pub fn status(self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            Self::InvalidCredentials | Self::Deactivated => StatusCode::UNAUTHORIZED,
            Self::TooLong(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Self::StoreUnavailable => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn detail(self) -> &'static str {
        match self {
            Self::InvalidCredentials => "Invalid username or password",
            Self::Deactivated => "Account is deactivated",
            Self::TooLong(detail) => detail,
            Self::Throttled(_) => "Too many login attempts. Try again later.",
            Self::Busy => "Server busy. Try again later.",
            Self::StoreUnavailable => "Session store unavailable",
        }
    }

    /// Whole seconds for `Retry-After` (at least 1), for the refusals that are worth retrying.
    pub fn retry_after(self) -> Option<u64> {
        match self {
            Self::Throttled(wait) => Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)),
            Self::Busy => Some(1),
            _ => None,
        }
        .map(|secs| secs.max(1))
    }
}

/// Whether a browser says this request came from a page of this very origin.
///
/// `Sec-Fetch-Site`, when present, must be `same-origin` (a sibling subdomain or another port
/// is `same-site`, and refused). `Origin`, when present, must be `http://` or `https://` plus
/// this request's `Host` (`null` is refused). A request with neither header is not from a
/// browser's cross-site page (every current browser sends one of them on a cross-site `POST`),
/// so `curl` and other API clients pass.
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        if site.as_bytes() != b"same-origin" {
            return false;
        }
    }
    match headers.get(ORIGIN) {
        None => true,
        Some(origin) => {
            let host = headers.get(HOST).map(|host| host.as_bytes());
            let origin = origin.as_bytes();
            let origin_host = origin
                .strip_prefix(b"https://")
                .or_else(|| origin.strip_prefix(b"http://"));
            host.is_some() && origin_host == host
        }
    }
}

/// Brute-force throttling with `governor`'s GCRA limiters: by client address (IPv6 per /64),
/// by username from that address, and by username from anywhere (the account). Every attempt
/// that would reach the password check takes one cell from each, the address first (so one
/// address cannot fill the other tables).
///
/// Policy: each key may make `per_minute` attempts in a burst, then one more every
/// `60 / per_minute` seconds; nothing is ever locked, a throttled key is free again after the
/// `Retry-After` it is told. The tight per-username budget is counted per address, so an
/// attacker who hammers a victim's username from their own address throttles only themselves:
/// the victim, from another address, still signs in. The account budget is looser and bounds
/// a guessing campaign spread over many addresses; to hold a victim back with it, an attacker
/// must spend that many attempts a minute from more addresses than the per-address budgets
/// allow any one of them. Usernames are keyed as sent.
pub struct LoginThrottle {
    by_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    by_username: Option<DefaultKeyedRateLimiter<(String, Option<IpAddr>)>>,
    by_account: Option<DefaultKeyedRateLimiter<String>>,
}

impl LoginThrottle {
    /// `0` turns a limiter off.
    pub fn new(
        per_address_per_minute: u32,
        per_username_per_minute: u32,
        per_account_per_minute: u32,
    ) -> Self {
        fn limiter<K: Clone + Eq + std::hash::Hash>(
            per_minute: u32,
        ) -> Option<DefaultKeyedRateLimiter<K>> {
            NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n)))
        }
        Self {
            by_address: limiter(per_address_per_minute),
            by_username: limiter(per_username_per_minute),
            by_account: limiter(per_account_per_minute),
        }
    }

    /// Takes a cell for this attempt, or says how long to wait.
    pub fn check(&self, address: Option<IpAddr>, username: &str) -> Result<(), Duration> {
        let now = DefaultClock::default().now();
        let address = address.map(throttled_address);
        if let (Some(limiter), Some(address)) = (&self.by_address, address) {
            limiter
                .check_key(&address)
                .map_err(|not_until| not_until.wait_time_from(now))?;
        }
        if let Some(limiter) = &self.by_username {
            limiter
                .check_key(&(username.to_owned(), address))
                .map_err(|not_until| not_until.wait_time_from(now))?;
        }
        if let Some(limiter) = &self.by_account {
            limiter
                .check_key(&username.to_owned())
                .map_err(|not_until| not_until.wait_time_from(now))?;
        }
        Ok(())
    }

    /// Forgets keys whose cells are all back, so the tables hold only recent attempts.
    pub fn prune(&self) {
        if let Some(limiter) = &self.by_address {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.by_username {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(limiter) = &self.by_account {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// The key an address is throttled under. One IPv6 host usually holds a whole /64 and can
/// send from any address in it, so IPv6 is throttled per /64; an IPv4-mapped address (a
/// dual-stack listener) is its IPv4 address, not a /64 shared by every IPv4 client.
fn throttled_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// The password check could not be queued: every worker is busy and the queue is full.
#[derive(Debug)]
pub struct Busy;

struct Job {
    password: String,
    hash: Arc<str>,
    reply: oneshot::Sender<bool>,
}

/// A fixed set of argon2 worker threads behind a bounded queue.
///
/// At most `workers` checks run at once (so at most `workers` × the argon2 memory cost is in
/// use), and at most `queue` more wait; a login beyond that is refused with [`Busy`] at once
/// instead of queueing without bound. A login is admitted ([`admit`](Self::admit)) before it
/// looks the user up, so a flood is refused before it reaches the database too. Dedicated
/// threads (rather than `spawn_blocking`, whose pool grows to hundreds of threads) also keep
/// the allocator's per-thread arenas few.
#[derive(Clone)]
pub struct PasswordChecker {
    jobs: SyncSender<Job>,
    slots: Arc<Semaphore>,
}

/// A login's place among the password checks running or queued, held until its check ends.
pub struct Admission {
    _slot: OwnedSemaphorePermit,
}

impl PasswordChecker {
    pub fn new(workers: usize, queue: usize) -> std::io::Result<Self> {
        let (jobs, receiver) = std::sync::mpsc::sync_channel::<Job>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..workers.max(1) {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || work(&receiver))?;
        }
        let slots = Arc::new(Semaphore::new(workers.max(1) + queue));
        Ok(Self { jobs, slots })
    }

    /// A place for one password check, or [`Busy`] when every worker and queue slot is taken.
    pub fn admit(&self) -> Result<Admission, Busy> {
        Arc::clone(&self.slots)
            .try_acquire_owned()
            .map(|slot| Admission { _slot: slot })
            .map_err(|_| Busy)
    }

    /// Checks `password` against a PHC-format argon2 `hash` on a worker thread, in the place
    /// `_admitted` holds.
    pub async fn verify(
        &self,
        _admitted: &Admission,
        password: &str,
        hash: Arc<str>,
    ) -> Result<bool, Busy> {
        let (reply, outcome) = oneshot::channel();
        let job = Job {
            password: password.to_owned(),
            hash,
            reply,
        };
        match self.jobs.try_send(job) {
            Ok(()) => Ok(outcome.await.unwrap_or(false)),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(Busy),
        }
    }
}

fn work(receiver: &Mutex<Receiver<Job>>) {
    // The worker's argon2 memory, allocated once and reused by every check: a fresh 19 MiB
    // (64-byte aligned) allocation per check is not reliably given back by the allocator, and
    // the process would grow with every login.
    let mut memory = Vec::new();
    loop {
        let job = match receiver.lock().unwrap_or_else(|e| e.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        // The client went away while the job was queued: skip the hash.
        if job.reply.is_closed() {
            continue;
        }
        let ok = verify(&mut memory, job.password.as_bytes(), &job.hash);
        let _ = job.reply.send(ok);
    }
}

/// The largest argon2 memory a stored hash may ask for (64 MiB); a hash asking for more is
/// refused rather than allocated.
const MAX_MEMORY_BLOCKS: usize = 64 * 1024;

/// Checks `password` against a PHC-format argon2 hash, with `memory` as the working memory.
fn verify(memory: &mut Vec<Block>, password: &[u8], hash: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let (Ok(params), Ok(algorithm)) = (
        Params::try_from(&parsed),
        Algorithm::try_from(parsed.algorithm),
    ) else {
        return false;
    };
    let Ok(version) = parsed
        .version
        .map_or(Ok(Version::default()), Version::try_from)
    else {
        return false;
    };
    let blocks = params.block_count();
    if blocks > MAX_MEMORY_BLOCKS {
        return false;
    }
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut output = [0u8; 64];
    let Some(output) = output.get_mut(..expected.len()) else {
        return false;
    };
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password, salt, output, &mut memory[..blocks])
        .is_ok()
        // `Output`'s equality is constant-time.
        && Output::new(output).is_ok_and(|output| output == expected)
}

/// The worker count: the machine's cores.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}
