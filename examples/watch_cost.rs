//! What an idle watched connection costs: memory per [`SessionWatch`] with its task parked in
//! `next()`, and the work done while idle.
//!
//! ```text
//! cargo run --release --example watch_cost -- 100000
//! ```
//!
//! It logs N sessions in on the in-memory store, then measures the process's resident memory
//! before and after starting one task per session that waits on its watch (as a game socket's
//! task does, with its expiry timer armed), then how long one revocation takes to end them
//! all. An idle watch never reaches the store (`tests/it/watch.rs` `idle_watches_cost_no_queries`
//! counts the statements on PostgreSQL), so the store does not change the figure. Linux only
//! (reads `/proc`).

use std::time::Duration;

use tower_session_auth::{LoginOptions, MemoryStore, SessionConfig, SessionManager};

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: usize = std::env::args()
        .nth(1)
        .map(|arg| arg.parse())
        .transpose()?
        .unwrap_or(10_000);
    let store = MemoryStore::new();
    store.upsert_user(1, "player", Some("player"), true);
    let manager = SessionManager::new(store, SessionConfig::default());
    let mut tokens = Vec::with_capacity(count);
    for _ in 0..count {
        tokens.push(manager.login(1, LoginOptions::new()).await?.token);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = resident_bytes();
    let mut tasks = Vec::with_capacity(count);
    for token in &tokens {
        let mut watch = manager.watch(token).await?.expect("live session");
        tasks.push(tokio::spawn(async move { watch.next().await }));
    }
    // Let every task park in `next()`.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = resident_bytes();
    let per_watch = after.saturating_sub(before) as f64 / count as f64;
    println!("watches: {}", manager.watch_count());
    println!(
        "resident memory: {:.1} MiB before, {:.1} MiB after; {per_watch:.0} bytes per watch \
         (registry entry, SessionWatch, parked task)",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
    );
    println!(
        "size_of::<SessionWatch>() = {} bytes",
        std::mem::size_of::<tower_session_auth::watch::SessionWatch>()
    );
    for task in &tasks {
        assert!(!task.is_finished(), "a watch ended while idle");
    }
    manager.revoke_all(1).await?;
    let start = std::time::Instant::now();
    for task in tasks {
        task.await?;
    }
    println!(
        "revoke_all: {count} watches ended in {:.0} ms (one lookup each)",
        start.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}
