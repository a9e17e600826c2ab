//! The `LISTEN` connection that carries other instances' session events to this one: to the
//! manager's session watches and, with the `cache` feature, to its validation cache.

#[cfg(feature = "cache")]
use crate::cache::SessionCache;
use crate::manager::SessionManager;
use crate::store::{PgStore, PgTls};

/// One listener connection's life: connect, `LISTEN` on `channel`, report the connection,
/// apply notifications until the connection ends.
async fn listen(
    config: &tokio_postgres::Config,
    channel: &str,
    tls: &PgTls,
    connected: &(dyn Fn() + Send + Sync),
    apply: &(dyn Fn(&str) + Send + Sync),
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(tls.clone()).await?;
    let (sender, mut payloads) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(note))) => {
                    if sender.send(Ok(note.payload().to_owned())).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    let _ = sender.send(Err(error));
                    return;
                }
                None => return,
            }
        }
    });
    let listening = client.batch_execute(&format!("LISTEN {channel}")).await;
    if let Err(error) = listening {
        driver.abort();
        return Err(error);
    }
    connected();
    tracing::info!("session invalidation listener connected");
    let outcome = loop {
        match payloads.recv().await {
            Some(Ok(payload)) => apply(&payload),
            Some(Err(error)) => break Err(error),
            None => break Ok(()),
        }
    };
    drop(client);
    driver.abort();
    outcome
}

/// Runs [`listen`] forever, reconnecting a second after each failure.
fn spawn_listener(
    config: tokio_postgres::Config,
    channel: String,
    tls: PgTls,
    connected: impl Fn(bool) + Send + Sync + 'static,
    apply: impl Fn(&str) + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    connected(false);
    tokio::spawn(async move {
        loop {
            if let Err(error) = listen(&config, &channel, &tls, &|| connected(true), &apply).await {
                tracing::warn!(
                    error = %crate::store::Causes(&error),
                    "session invalidation listener disconnected; reconnecting"
                );
            }
            connected(false);
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    })
}

/// The listener of [`PgStore::spawn_invalidation_listener`] (and the sqlx store's).
#[cfg(feature = "cache")]
fn cache_listener(
    config: tokio_postgres::Config,
    channel: String,
    tls: PgTls,
    cache: SessionCache,
) -> tokio::task::JoinHandle<()> {
    let connections = cache.clone();
    spawn_listener(
        config,
        channel,
        tls,
        move |connected| connections.listener_connected(connected),
        move |payload| cache.apply_notification(payload),
    )
}

/// The listener of [`PgStore::spawn_session_listener`] (and the sqlx store's).
fn session_listener(
    config: tokio_postgres::Config,
    channel: String,
    tls: PgTls,
    manager: SessionManager,
) -> tokio::task::JoinHandle<()> {
    let events = manager.clone();
    spawn_listener(
        config,
        channel,
        tls,
        move |connected| manager.listener_connected(connected),
        move |payload| events.apply_notification(payload),
    )
}

impl PgStore {
    /// Spawns the task that keeps `cache` in step with other instances (feature `cache`): on a
    /// dedicated connection made from `config` (not a pooled one) it `LISTEN`s for the
    /// triggers' notifications and drops the entries they name. The cache serves nothing
    /// until the listener is connected and is flushed on every (re)connection, since missed
    /// notifications are not replayed; after a failure the task reconnects every second.
    /// Give it the store's multi-host configuration with `target_session_attrs=read-write`
    /// ([`PgTls::from_url(&url)?.0`](PgTls::from_url)): after a failover it reconnects to the promoted server,
    /// where the revocations are made (a standby refuses `LISTEN`). It connects with the
    /// store's TLS connector, as [`spawn_session_listener`](Self::spawn_session_listener) does.
    /// It must be a direct connection to PostgreSQL, never through PgBouncer in transaction
    /// pooling mode (see [`prepared_statements`](Self::prepared_statements)): `LISTEN` holds
    /// for a session, and PgBouncer drops the notifications that arrive between transactions.
    ///
    /// [`spawn_session_listener`](Self::spawn_session_listener) does the same for a
    /// manager's cache and also wakes its session watches, on the same one connection.
    #[cfg(feature = "cache")]
    pub fn spawn_invalidation_listener(
        &self,
        config: tokio_postgres::Config,
        cache: SessionCache,
    ) -> tokio::task::JoinHandle<()> {
        cache_listener(config, self.channel(), self.connector(), cache)
    }

    /// Spawns the one task that carries other instances' session events to `manager`: on a
    /// dedicated connection made from `config` (not a pooled one) it `LISTEN`s for the
    /// notifications of [`install_invalidation_triggers`](PgStore::install_invalidation_triggers),
    /// wakes the [`SessionWatch`](crate::watch::SessionWatch)es of the sessions and users they name,
    /// and, with the `cache` feature, drops the manager's cache entries as
    /// `spawn_invalidation_listener` does. Every watch of the manager shares this connection.
    ///
    /// On each (re)connection, since missed notifications are not replayed, the cache is
    /// flushed and every watch checks its session once; after a failure the task reconnects
    /// every second. Pass the manager as configured (after `with_cache`); a manager with a
    /// cache then needs no other listener. Set TCP keepalives on `config` (`keepalives_idle`)
    /// so that a link that silently drops is noticed. `config` must reach PostgreSQL directly,
    /// even when the store goes through PgBouncer in transaction pooling mode (see
    /// [`prepared_statements`](Self::prepared_statements)): `LISTEN` holds for a session, and
    /// PgBouncer drops the notifications that arrive between transactions.
    ///
    /// The connection is encrypted and checked as the store's own: it connects with the
    /// store's TLS connector ([`PgStore::tls`], which [`connect`](PgStore::connect) sets from
    /// the connection string's `sslmode` and `sslrootcert`). Make `config` from the same
    /// string with [`PgTls::from_url`] (tokio-postgres cannot parse `sslmode=verify-ca`,
    /// `verify-full` or `sslrootcert`):
    ///
    /// ```no_run
    /// # async fn demo(manager: tower_session_auth::SessionManager) -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_session_auth::{PgStore, store::PgTls};
    ///
    /// let url = "postgres://app:secret@db.example.com/app?sslmode=verify-full";
    /// let store = PgStore::connect(url)?;
    /// let (mut listen, _) = PgTls::from_url(url)?;
    /// listen.keepalives_idle(std::time::Duration::from_secs(30));
    /// store.spawn_session_listener(listen, manager.clone());
    /// # Ok(()) }
    /// ```
    pub fn spawn_session_listener(
        &self,
        config: tokio_postgres::Config,
        manager: SessionManager,
    ) -> tokio::task::JoinHandle<()> {
        session_listener(config, self.channel(), self.connector(), manager)
    }
}

#[cfg(feature = "sqlx")]
impl crate::store::SqlxStore {
    /// [`PgStore::spawn_invalidation_listener`] for a store on sqlx (features `cache` and
    /// `sqlx`): the same dedicated `LISTEN` connection, made by `tokio-postgres` from `config`
    /// ([`PgTls::from_url(&url)?.0`](PgTls::from_url)) with the store's
    /// [`tls`](crate::store::SqlxStore::tls) connector, outside the application's pool.
    #[cfg(feature = "cache")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
    pub fn spawn_invalidation_listener(
        &self,
        config: tokio_postgres::Config,
        cache: SessionCache,
    ) -> tokio::task::JoinHandle<()> {
        cache_listener(config, self.channel(), self.connector(), cache)
    }

    /// [`PgStore::spawn_session_listener`] for a store on sqlx: the one task that carries
    /// other instances' session events (the notifications of
    /// [`install_invalidation_triggers`](Self::install_invalidation_triggers)) to `manager`'s
    /// session watches and cache, on a dedicated `LISTEN` connection made by `tokio-postgres`
    /// from `config` ([`PgTls::from_url(&url)?.0`](PgTls::from_url)) with the store's
    /// [`tls`](crate::store::SqlxStore::tls) connector, outside the application's pool: a
    /// pooled connection cannot stay listening.
    pub fn spawn_session_listener(
        &self,
        config: tokio_postgres::Config,
        manager: SessionManager,
    ) -> tokio::task::JoinHandle<()> {
        session_listener(config, self.channel(), self.connector(), manager)
    }
}
