//! The `--scale` sections, run after the other cases on the `ours` server:
//!
//! - **Table size**: the `sessions` table is bulk-loaded (`INSERT ... SELECT` from
//!   `generate_series`, in statements of a million rows) with live sessions spread over
//!   100,000 users up to each size asked for (10 k, 1 M, 10 M rows by default), vacuumed and
//!   analysed; then validations run at concurrency 8 on the 64 sessions of the HTTP logins.
//!   Requests/s and p99 are compared with the smallest size's, and the table's and indexes'
//!   sizes reported.
//! - **Mass expiry**: the loaded rows are removed, the given number of expired sessions loaded
//!   (1 M by default), and validations run at concurrency 8 while they are purged: by the
//!   single `DELETE` that the purge was before it worked in batches, by
//!   `SessionManager::purge_expired` in batches of 10 000 without a pause (the defaults before
//!   the purge paced itself), the same with the default batch size and pause, and by
//!   `SessionManager::spawn_sweeper`. Each variant reports the validations' p99 before and
//!   during the purge, the failed requests, and how long the purge took.
//! - **Long run**: the given number of sessions (10,000 by default) are made by logins,
//!   aged so that touches fall due, and validated at concurrency 8 with the default
//!   `touch_interval` for the given time (10 minutes by default), each worker cycling through
//!   its share of them. The table and index sizes, the updates and HOT updates, the dead
//!   tuples and this process's resident memory (servers and load generator) are read before,
//!   during and after.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tower_session_auth::LoginOptions;

use super::*;

/// Rows in the scale sections' users table (the seeded ones and more).
const SCALE_USERS: i64 = 100_000;
/// Workers of the scale sections.
const SCALE_CONCURRENCY: usize = 8;
/// `client_type` of the bulk-loaded rows, so that they can be told from the real sessions.
const LOADED: &str = "bench-load";
/// Rows per loading statement.
const LOAD_CHUNK: u64 = 1_000_000;
/// Validations measured before the purge starts, and after it ends.
const BEFORE_PURGE: Duration = Duration::from_secs(5);
const AFTER_PURGE: Duration = Duration::from_secs(2);
/// Left out at the start of the load, while the connections warm up.
const PURGE_WARMUP: Duration = Duration::from_millis(500);
/// Latency buckets of the purge chart.
const BUCKET: Duration = Duration::from_millis(250);
/// The sweeper's interval in the mass-expiry section.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Readings taken during the long run.
const SOAK_READINGS: u32 = 10;

/// Sizes and durations of the scale sections (flags `--scale-rows`, `--purge-rows`,
/// `--soak-secs`, `--soak-sessions`; small values make a quick trial of the harness).
pub struct ScaleSettings {
    pub rows: Vec<u64>,
    pub purge_rows: u64,
    pub soak: Duration,
    pub soak_sessions: usize,
}

impl Default for ScaleSettings {
    fn default() -> Self {
        Self {
            rows: vec![10_000, 1_000_000, 10_000_000],
            purge_rows: 1_000_000,
            soak: Duration::from_secs(600),
            soak_sessions: 10_000,
        }
    }
}

impl ScaleSettings {
    pub fn set(&mut self, flag: &str, value: &str) -> Result<(), String> {
        let number = |text: &str| -> Result<u64, String> {
            text.trim()
                .replace('_', "")
                .parse::<u64>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("{text:?} is not a positive whole number"))
        };
        match flag {
            "--scale-rows" => {
                let mut rows = value
                    .split(',')
                    .map(number)
                    .collect::<Result<Vec<_>, _>>()?;
                rows.sort_unstable();
                rows.dedup();
                self.rows = rows;
            }
            "--purge-rows" => self.purge_rows = number(value)?,
            "--soak-secs" => self.soak = Duration::from_secs(number(value)?),
            "--soak-sessions" => {
                self.soak_sessions = usize::try_from(number(value)?)
                    .map_err(|_| "too many sessions".to_owned())?
                    .max(SCALE_CONCURRENCY)
            }
            _ => return Err("unknown flag".to_owned()),
        }
        Ok(())
    }
}

/// What the scale sections give the summary and the charts.
pub struct ScaleReport {
    pub json: Value,
    /// Top-level summary keys.
    pub keys: Vec<(&'static str, Value)>,
    /// Validation p99 per bucket against seconds since the purge started, per variant.
    pub purge_latency: Vec<charts::Series>,
    /// Expired sessions purged by each variant.
    pub purge_rows: u64,
}

/// The summary keys of the scale sections, null in a run without them.
pub const KEYS: [&str; 5] = [
    "scale_10m_vs_10k_c8",
    "scale_largest_vs_smallest_c8",
    "purge_p99_ratio",
    "soak_hot_update_share",
    "soak_table_growth",
];

/// The `ours` server and its sessions, as the other cases set them up.
pub struct Ours<'a> {
    pub store: &'a PgStore,
    pub config: &'a SessionConfig,
    pub addr: SocketAddr,
    pub cookies: &'a [HeaderValue],
}

pub async fn run(bench: &Bench, settings: &ScaleSettings, ours: Ours<'_>) -> ScaleReport {
    let db = &bench.db;
    let client = db.pool.get().await.expect("pool connection");
    client
        .execute(
            "INSERT INTO users (id, username, role, is_active) \
             SELECT i, 'user' || i, (ARRAY['player', 'worldbuilder', 'admin', 'superuser'])[1 + i % 4], true \
             FROM generate_series($1::int8, $2::int8) i ON CONFLICT DO NOTHING",
            &[&(USERS + 1), &SCALE_USERS],
        )
        .await
        .expect("add users");
    client
        .batch_execute("ANALYZE users")
        .await
        .expect("analyze users");
    drop(client);

    let table_size = table_size(bench, settings, &ours).await;
    let (purge, purge_latency) = mass_expiry(bench, settings, &ours).await;
    let soak = long_run(bench, settings, &ours).await;

    let rate_at = |rows: u64| {
        table_size
            .iter()
            .find(|size| size["rows"] == json!(rows))
            .and_then(|size| size["requests_per_second"].as_f64())
    };
    let ratio = |rows: u64| {
        let smallest = rate_at(10_000)?;
        Some(round(rate_at(rows)? / smallest, 3))
    };
    let smallest = settings.rows.first().copied().unwrap_or(0);
    let largest = settings.rows.last().copied().unwrap_or(0);
    let largest_ratio = rate_at(smallest)
        .zip(rate_at(largest))
        .map(|(small, large)| round(large / small, 3));
    let batched_ratio = purge
        .iter()
        .find(|variant| variant["variant"] == "batches")
        .and_then(|variant| variant["p99_ratio"].as_f64());
    let keys = vec![
        ("scale_10m_vs_10k_c8", json!(ratio(10_000_000))),
        (
            "scale_largest_vs_smallest_c8",
            json!({ "smallest_rows": smallest, "largest_rows": largest, "ratio": largest_ratio }),
        ),
        ("purge_p99_ratio", json!(batched_ratio)),
        ("soak_hot_update_share", soak["hot_update_share"].clone()),
        ("soak_table_growth", soak["table_and_index_growth"].clone()),
    ];
    ScaleReport {
        json: json!({
            "concurrency": SCALE_CONCURRENCY,
            "users": SCALE_USERS,
            "table_size": table_size,
            "mass_expiry": purge,
            "long_run": soak,
        }),
        keys,
        purge_latency,
        purge_rows: settings.purge_rows,
    }
}

// --- Table size -------------------------------------------------------------------------

async fn table_size(bench: &Bench, settings: &ScaleSettings, ours: &Ours<'_>) -> Vec<Value> {
    println!(
        "\ntable size: validations at c={SCALE_CONCURRENCY} with live sessions over \
         {SCALE_USERS} users\n{:>10}{:>9}{:>12}{:>8}{:>8}{:>10}{:>11}{:>11}",
        "rows", "load s", "requests/s", "p50 ms", "p99 ms", "vs first", "table MiB", "index MiB"
    );
    let case = validation_case(ours, "ours-scale");
    let mut loaded = 0;
    let mut rows = Vec::new();
    let mut first_rate = None;
    for &size in &settings.rows {
        let started = Instant::now();
        if size > loaded {
            load(bench, loaded + 1, size, false).await;
            loaded = size;
        }
        vacuum(bench).await;
        let load_seconds = started.elapsed().as_secs_f64();
        let sizes = sizes(bench).await;
        age_real_sessions(bench, ours).await;
        let measured = bench.measure(&case, SCALE_CONCURRENCY, false).await;
        let rate = measured.rate();
        let first = *first_rate.get_or_insert(rate);
        println!(
            "{size:>10}{load_seconds:>9.1}{rate:>12.0}{:>8.3}{:>8.3}{:>10.3}{:>11.1}{:>11.1}",
            measured.p50_ms,
            measured.p99_ms,
            rate / first,
            mib(&sizes["table_bytes"]),
            mib(&sizes["indexes_bytes"]),
        );
        rows.push(json!({
            "rows": size,
            "load_and_vacuum_seconds": round(load_seconds, 1),
            "requests_per_second": round(rate, 1),
            "p50_ms": round(measured.p50_ms, 3),
            "p99_ms": round(measured.p99_ms, 3),
            "rate_vs_first": round(rate / first, 3),
            "sizes": sizes,
            "case": measured.json(),
        }));
    }
    rows
}

fn mib(bytes: &Value) -> f64 {
    bytes.as_f64().unwrap_or(0.0) / 1024.0 / 1024.0
}

/// `/me` on our server with the HTTP logins' sessions, one per worker.
fn validation_case(ours: &Ours<'_>, name: &'static str) -> Case {
    Case {
        name,
        method: Method::GET,
        addr: ours.addr,
        paths: vec!["/me".to_owned()],
        cookies: ours.cookies.to_vec(),
        database: true,
    }
}

/// Loads sessions `first..=last` (numbered so that each has its own token hash), live or
/// already expired, spread over the users.
async fn load(bench: &Bench, first: u64, last: u64, expired: bool) {
    let client = bench.db.pool.get().await.expect("pool connection");
    let mut from = first;
    while from <= last {
        let to = last.min(from + LOAD_CHUNK - 1);
        client
            .execute(
                "INSERT INTO sessions (id, token_hash, user_id, client_type, created_at, \
                     last_activity, expires_at, absolute_expires_at, authenticated_at) \
                 SELECT gen_random_uuid(), sha256(int8send(i)), 1 + i % $3, $4, \
                     now() - interval '1 day' - (i % 3600) * interval '1 second', \
                     CASE WHEN $5 THEN now() - interval '9 hours' ELSE now() END, \
                     CASE WHEN $5 THEN now() - interval '1 hour' \
                          ELSE now() + interval '8 hours' END, \
                     now() + interval '6 days', \
                     now() - interval '1 day' \
                 FROM generate_series($1::int8, $2::int8) i",
                &[
                    &i64::try_from(from).expect("rows"),
                    &i64::try_from(to).expect("rows"),
                    &SCALE_USERS,
                    &LOADED,
                    &expired,
                ],
            )
            .await
            .expect("bulk-load sessions");
        from = to + 1;
    }
}

async fn vacuum(bench: &Bench) {
    let client = bench.db.pool.get().await.expect("pool connection");
    client
        .batch_execute("VACUUM (ANALYZE) sessions")
        .await
        .expect("vacuum sessions");
}

/// Removes the loaded rows, keeping the real sessions.
async fn clear_loaded(bench: &Bench) {
    let client = bench.db.pool.get().await.expect("pool connection");
    client
        .batch_execute(&format!(
            "BEGIN;
             CREATE TEMP TABLE kept ON COMMIT DROP AS
                 SELECT * FROM sessions WHERE client_type <> '{LOADED}';
             TRUNCATE sessions;
             INSERT INTO sessions SELECT * FROM kept;
             COMMIT;"
        ))
        .await
        .expect("remove the loaded sessions");
    drop(client);
    vacuum(bench).await;
}

/// Last activity of the real sessions spread over the past touch interval (see
/// `Db::age_sessions`), leaving the loaded rows alone.
async fn age_real_sessions(bench: &Bench, ours: &Ours<'_>) {
    let client = bench.db.pool.get().await.expect("pool connection");
    client
        .execute(
            "UPDATE sessions SET last_activity = now() - random() * $1 * interval '1 second' \
             WHERE client_type <> $2",
            &[&ours.config.touch_interval.as_secs_f64(), &LOADED],
        )
        .await
        .expect("age the sessions");
}

/// Sizes of the sessions table, its indexes, and each index, in bytes.
async fn sizes(bench: &Bench) -> Value {
    let client = bench.db.pool.get().await.expect("pool connection");
    let row = client
        .query_one(
            "SELECT pg_relation_size('sessions'), pg_indexes_size('sessions'), \
                    pg_total_relation_size('sessions')",
            &[],
        )
        .await
        .expect("sizes");
    let indexes: serde_json::Map<String, Value> = client
        .query(
            "SELECT c.relname::text, pg_relation_size(c.oid) FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = 'sessions'::regclass ORDER BY 1",
            &[],
        )
        .await
        .expect("index sizes")
        .iter()
        .map(|row| (row.get::<_, String>(0), json!(row.get::<_, i64>(1))))
        .collect();
    json!({
        "table_bytes": row.get::<_, i64>(0),
        "indexes_bytes": row.get::<_, i64>(1),
        "total_bytes": row.get::<_, i64>(2),
        "indexes": indexes,
    })
}

// --- Mass expiry ------------------------------------------------------------------------

/// One request of a timed load: when it was sent (µs since the load started), how long it
/// took (µs), and whether it succeeded.
#[derive(Clone, Copy)]
struct Sample {
    sent_us: u64,
    latency_us: u32,
    ok: bool,
}

/// Clients that send until told to stop, recording every request.
struct TimedLoad {
    origin: Instant,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Sample>>>,
}

impl TimedLoad {
    async fn start(bench: &Bench, case: &Case) -> Self {
        let clients = connect_all(&bench.clients, case.targets(SCALE_CONCURRENCY)).await;
        let origin = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = clients
            .into_iter()
            .map(|mut client| {
                let stop = stop.clone();
                bench.clients.spawn(async move {
                    let mut samples = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let sent = Instant::now();
                        let reply = client.send().await;
                        samples.push(Sample {
                            sent_us: u64::try_from((sent - origin).as_micros()).unwrap_or(0),
                            latency_us: u32::try_from(sent.elapsed().as_micros())
                                .unwrap_or(u32::MAX),
                            ok: reply.status.is_success(),
                        });
                    }
                    samples
                })
            })
            .collect();
        Self {
            origin,
            stop,
            tasks,
        }
    }

    async fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let mut samples = Vec::new();
        for task in self.tasks {
            samples.extend(task.await.expect("a client failed"));
        }
        samples
    }
}

fn p99_ms(samples: impl Iterator<Item = Sample>) -> (f64, usize) {
    let mut latencies: Vec<u32> = samples.map(|s| s.latency_us).collect();
    latencies.sort_unstable();
    (quantile_ms(&latencies, 0.99), latencies.len())
}

#[derive(Clone, Copy, PartialEq)]
enum Purge {
    /// The single `DELETE` of every expired row that the purge was before batching.
    OneStatement,
    /// `SessionManager::purge_expired` in batches of 10 000 without a pause.
    Unpaced,
    /// `SessionManager::purge_expired` with the default batch size and pause.
    Batches,
    /// `SessionManager::spawn_sweeper`, the defaults, until no expired row is left.
    Sweeper,
}

impl Purge {
    fn name(self) -> &'static str {
        match self {
            Self::OneStatement => "one-statement",
            Self::Unpaced => "unpaced",
            Self::Batches => "batches",
            Self::Sweeper => "sweeper",
        }
    }

    /// The configuration its manager purges with.
    fn config(self, ours: &SessionConfig) -> SessionConfig {
        match self {
            Self::Unpaced => ours
                .clone()
                .purge_batch_size(NonZeroU32::new(10_000).expect("non-zero"))
                .purge_pause(Duration::ZERO),
            _ => ours.clone(),
        }
    }
}

async fn mass_expiry(
    bench: &Bench,
    settings: &ScaleSettings,
    ours: &Ours<'_>,
) -> (Vec<Value>, Vec<charts::Series>) {
    println!(
        "\nmass expiry: {} expired sessions purged while validations run at c={SCALE_CONCURRENCY} \
         \n{:<15}{:>10}{:>10}{:>10}{:>10}{:>13}{:>10}{:>10}{:>10}",
        settings.purge_rows,
        "variant",
        "batch",
        "pause ms",
        "purged",
        "purge s",
        "p99 before",
        "p99 in",
        "ratio",
        "failed"
    );
    let case = validation_case(ours, "ours-purge");
    let mut variants = Vec::new();
    let mut chart = Vec::new();
    for purge in [
        Purge::OneStatement,
        Purge::Unpaced,
        Purge::Batches,
        Purge::Sweeper,
    ] {
        let config = purge.config(ours.config);
        let manager = SessionManager::new(ours.store.clone(), config.clone());
        let (batch, pause) = match purge {
            Purge::OneStatement => (None, None),
            _ => (
                Some(config.purge_batch_size.get()),
                Some(config.purge_pause.as_secs_f64() * 1e3),
            ),
        };
        clear_loaded(bench).await;
        load(bench, 1, settings.purge_rows, true).await;
        vacuum(bench).await;
        age_real_sessions(bench, ours).await;
        let load = TimedLoad::start(bench, &case).await;
        tokio::time::sleep(BEFORE_PURGE).await;
        let started = Instant::now();
        let purged = match purge {
            Purge::OneStatement => {
                let client = bench.db.pool.get().await.expect("pool connection");
                client
                    .execute(
                        "DELETE FROM sessions WHERE expires_at <= $1 OR absolute_expires_at <= $1",
                        &[&time::OffsetDateTime::now_utc()],
                    )
                    .await
                    .expect("purge")
            }
            Purge::Unpaced | Purge::Batches => manager.purge_expired().await.expect("purge"),
            Purge::Sweeper => {
                let sweeper = manager
                    .spawn_sweeper(SWEEP_EVERY)
                    .expect("a non-zero sweep interval");
                while loaded_rows_left(bench).await {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                sweeper.abort();
                settings.purge_rows
            }
        };
        let took = started.elapsed();
        tokio::time::sleep(AFTER_PURGE).await;
        let origin = load.origin;
        let samples = load.finish().await;
        assert!(
            !loaded_rows_left(bench).await,
            "the {} purge left expired rows",
            purge.name()
        );
        let start_us = (started - origin).as_micros() as u64;
        let end_us = start_us + took.as_micros() as u64;
        let warm_us = PURGE_WARMUP.as_micros() as u64;
        let (before, before_count) = p99_ms(
            samples
                .iter()
                .copied()
                .filter(|s| s.sent_us >= warm_us && s.sent_us < start_us),
        );
        let (during, during_count) = p99_ms(
            samples
                .iter()
                .copied()
                .filter(|s| s.sent_us >= start_us && s.sent_us <= end_us),
        );
        let failed = samples.iter().filter(|s| !s.ok).count();
        let ratio = during / before;
        println!(
            "{:<15}{:>10}{:>10}{purged:>10}{:>10.2}{before:>13.3}{during:>10.3}{ratio:>10.2}{failed:>10}",
            purge.name(),
            batch.map_or("-".to_owned(), |batch| batch.to_string()),
            pause.map_or("-".to_owned(), |pause| pause.to_string()),
            took.as_secs_f64(),
        );
        // p99 per bucket, against seconds since the purge started.
        let bucket_us = BUCKET.as_micros() as u64;
        let mut buckets: std::collections::BTreeMap<u64, Vec<u32>> = Default::default();
        for sample in samples.iter().filter(|s| s.sent_us >= warm_us) {
            buckets
                .entry(sample.sent_us / bucket_us)
                .or_default()
                .push(sample.latency_us);
        }
        let points: Vec<(f64, f64)> = buckets
            .into_iter()
            .map(|(bucket, mut latencies)| {
                latencies.sort_unstable();
                let at = (bucket * bucket_us) as f64 / 1e6 - start_us as f64 / 1e6;
                (at, quantile_ms(&latencies, 0.99))
            })
            .collect();
        chart.push((
            format!("{} (purge {:.1} s)", purge.name(), took.as_secs_f64()),
            points,
        ));
        variants.push(json!({
            "variant": purge.name(),
            "batch_size": batch,
            "pause_ms": pause,
            "purged": purged,
            "purge_seconds": round(took.as_secs_f64(), 3),
            "p99_before_ms": round(before, 3),
            "p99_during_ms": round(during, 3),
            "p99_ratio": round(ratio, 3),
            "requests_before": before_count,
            "requests_during": during_count,
            "failed_requests": failed,
        }));
    }
    (variants, chart)
}

async fn loaded_rows_left(bench: &Bench) -> bool {
    let client = bench.db.pool.get().await.expect("pool connection");
    client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM sessions WHERE client_type = $1)",
            &[&LOADED],
        )
        .await
        .expect("count loaded rows")
        .get(0)
}

// --- Long run ---------------------------------------------------------------------------

/// One reading of the sessions table during the long run.
async fn reading(bench: &Bench, since: Instant) -> Value {
    let stats = bench
        .db
        .admin
        .query_one(
            "SELECT n_tup_upd, n_tup_hot_upd, n_live_tup, n_dead_tup, autovacuum_count, \
                    autoanalyze_count \
             FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'sessions'",
            &[&bench.db.schema],
        )
        .await
        .expect("read pg_stat_user_tables");
    json!({
        "seconds": round(since.elapsed().as_secs_f64(), 1),
        "sizes": sizes(bench).await,
        "updates": stats.get::<_, i64>(0),
        "hot_updates": stats.get::<_, i64>(1),
        "live_tuples": stats.get::<_, i64>(2),
        "dead_tuples": stats.get::<_, i64>(3),
        "autovacuums": stats.get::<_, i64>(4),
        "autoanalyzes": stats.get::<_, i64>(5),
        "process_rss_kib": process_rss_kib(),
    })
}

/// This process's resident memory (the servers and the load generator), KiB.
fn process_rss_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|line| line.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn long_run(bench: &Bench, settings: &ScaleSettings, ours: &Ours<'_>) -> Value {
    clear_loaded(bench).await;
    // The sessions: logins through the manager, spread over the users.
    let manager = SessionManager::new(ours.store.clone(), ours.config.clone());
    let cookie_name = ours.config.cookie.full_name();
    let mut tasks = Vec::new();
    for worker in 0..SCALE_CONCURRENCY {
        let manager = manager.clone();
        let cookie_name = cookie_name.clone();
        let count = settings.soak_sessions;
        tasks.push(tokio::spawn(async move {
            let mut cookies = Vec::new();
            for n in (worker..count).step_by(SCALE_CONCURRENCY) {
                let user = 1 + (n as i64 * 7919) % SCALE_USERS;
                let login = manager
                    .login(user, LoginOptions::new())
                    .await
                    .expect("login");
                let cookie = format!("{cookie_name}={}", login.token.expose());
                cookies.push(HeaderValue::from_str(&cookie).expect("cookie"));
            }
            cookies
        }));
    }
    let mut shares = Vec::new();
    for task in tasks {
        shares.push(task.await.expect("logins"));
    }
    bench.db.age_sessions(ours.config.touch_interval).await;
    vacuum(bench).await;
    bench.db.publish_table_stats().await;
    let clock = Instant::now();
    let before = reading(bench, clock).await;
    println!(
        "\nlong run: {} sessions validated at c={SCALE_CONCURRENCY} for {:?}, touch interval {:?}\n\
         {:>8}{:>12}{:>11}{:>11}{:>10}{:>10}{:>8}{:>10}",
        settings.soak_sessions,
        settings.soak,
        ours.config.touch_interval,
        "seconds",
        "requests/s",
        "table MiB",
        "index MiB",
        "HOT share",
        "dead",
        "autovac",
        "RSS MiB"
    );
    print_reading(&before, &before, 0, Duration::ZERO);

    let case = validation_case(ours, "ours-soak");
    let mut clients = connect_all(&bench.clients, case.targets(SCALE_CONCURRENCY)).await;
    for (client, share) in clients.iter_mut().zip(shares) {
        client.rotation = share;
    }
    let handle = bench.clients.clone();
    let length = settings.soak;
    let load = tokio::spawn(async move { run_phase(&handle, clients, length).await });
    let mut readings = vec![before.clone()];
    let every = settings.soak / SOAK_READINGS;
    for _ in 1..SOAK_READINGS {
        tokio::time::sleep(every).await;
        let now = reading(bench, clock).await;
        print_reading(&before, &now, 0, Duration::ZERO);
        readings.push(now);
    }
    let (clients, elapsed) = load.await.expect("the long run's load");
    bench.db.publish_table_stats().await;
    let after = reading(bench, clock).await;
    let mut latencies: Vec<u32> = clients
        .iter()
        .flat_map(|client| client.latencies.iter().copied())
        .collect();
    latencies.sort_unstable();
    print_reading(&before, &after, latencies.len(), elapsed);
    readings.push(after.clone());

    let delta = |key: &str| after[key].as_i64().unwrap_or(0) - before[key].as_i64().unwrap_or(0);
    let updates = delta("updates");
    let hot = delta("hot_updates");
    let total = |reading: &Value| reading["sizes"]["total_bytes"].as_f64().unwrap_or(0.0);
    let rss: Vec<u64> = readings
        .iter()
        .filter_map(|reading| reading["process_rss_kib"].as_u64())
        .collect();
    json!({
        "sessions": settings.soak_sessions,
        "seconds": round(elapsed.as_secs_f64(), 1),
        "touch_interval_seconds": ours.config.touch_interval.as_secs_f64(),
        "requests": latencies.len(),
        "requests_per_second": round(latencies.len() as f64 / elapsed.as_secs_f64(), 1),
        "p50_ms": round(quantile_ms(&latencies, 0.5), 3),
        "p99_ms": round(quantile_ms(&latencies, 0.99), 3),
        "updates": updates,
        "hot_updates": hot,
        "hot_update_share": (updates > 0).then(|| round(hot as f64 / updates as f64, 4)),
        "dead_tuples_after": after["dead_tuples"],
        "table_growth": round(
            after["sizes"]["table_bytes"].as_f64().unwrap_or(0.0)
                / before["sizes"]["table_bytes"].as_f64().unwrap_or(1.0),
            3
        ),
        "table_and_index_growth": round(total(&after) / total(&before), 3),
        "process_rss_kib": {
            "before": rss.first(),
            "after": rss.last(),
            "max": rss.iter().max(),
        },
        "readings": readings,
    })
}

fn print_reading(before: &Value, now: &Value, requests: usize, elapsed: Duration) {
    let delta = |key: &str| now[key].as_i64().unwrap_or(0) - before[key].as_i64().unwrap_or(0);
    let share = match delta("updates") {
        0 => "-".to_owned(),
        updates => format!("{:.3}", delta("hot_updates") as f64 / updates as f64),
    };
    let rate = if requests > 0 {
        format!("{:.0}", requests as f64 / elapsed.as_secs_f64())
    } else {
        "-".to_owned()
    };
    println!(
        "{:>8.0}{rate:>12}{:>11.2}{:>11.2}{share:>10}{:>10}{:>8}{:>10.1}",
        now["seconds"].as_f64().unwrap_or(0.0),
        mib(&now["sizes"]["table_bytes"]),
        mib(&now["sizes"]["indexes_bytes"]),
        now["dead_tuples"].as_i64().unwrap_or(0),
        delta("autovacuums"),
        now["process_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0,
    );
}
