//! Assembly and lifecycle. [`App::bind`] opens the database and binds both ports (so callers, tests
//! included, know the addresses before anything runs); [`App::run`] runs every component until the
//! shutdown token fires, then drains them in order within the grace period:
//! stop accepting ingest → health NOT_SERVING → workers stop claiming → in-flight attempts finish or
//! are abandoned at the deadline → pending writes commit → gRPC calls finish → connections close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use whd_proto::v1::delivery_service_server::DeliveryServiceServer;
use whd_proto::v1::subscription_service_server::SubscriptionServiceServer;

use crate::api;
use crate::attempt_index;
use crate::cache::SubscriptionCache;
use crate::commit::Committer;
use crate::config::{Config, ConfigError, SqliteSync};
use crate::delivery::attempt::AttemptContext;
use crate::delivery::client;
use crate::delivery::retry::RetryPolicy;
use crate::delivery::ssrf::TargetPolicy;
use crate::delivery::worker::{Dispatcher, DispatcherSettings, Wakeup};
use crate::events::{EventHub, Source};
use crate::gateway::{self, GatewaySettings};
use crate::notifications::Follower;
use crate::retention::{self, RetentionSettings};
use crate::service::{Service, ServiceSettings};
use crate::store::{self, LeaseRequest, OpenOptions, Store, StoreError};

/// Events a watcher may fall behind before it is told it lagged.
const WATCH_WINDOW: usize = 4096;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration breaks a rule.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened or migrated.
    #[error("could not open the database: {0}")]
    Store(#[from] StoreError),
    /// A port could not be bound.
    #[error("could not listen on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A server with its database open and its ports bound, ready to run.
#[derive(Debug)]
pub struct App {
    config: Config,
    store: Arc<dyn Store>,
    grpc_listener: TcpListener,
    http_listener: TcpListener,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
}

impl App {
    /// Validates the configuration, opens the database and binds both ports.
    pub async fn bind(config: Config) -> Result<App, StartError> {
        config.validate()?;
        let options = OpenOptions {
            sqlite_full_sync: config.sqlite_sync == SqliteSync::Full,
            max_connections: config.database_max_connections,
        };
        let store = store::open(&config.database_url, &options).await?;
        let grpc_listener = bind(config.grpc_addr).await?;
        let http_listener = bind(config.http_addr).await?;
        let grpc_addr = local_addr(&grpc_listener, config.grpc_addr)?;
        let http_addr = local_addr(&http_listener, config.http_addr)?;
        Ok(App {
            config,
            store,
            grpc_listener,
            http_listener,
            grpc_addr,
            http_addr,
        })
    }

    /// The bound gRPC address (with the real port when 0 was asked for).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Runs until `shutdown` is cancelled, then drains.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), StartError> {
        let App {
            config,
            store,
            grpc_listener,
            http_listener,
            grpc_addr,
            http_addr,
        } = self;
        let node_id: Arc<str> = config
            .node_id
            .clone()
            .unwrap_or_else(|| format!("node-{}", uuid::Uuid::new_v4().simple()))
            .into();
        let lease = LeaseRequest {
            owner: node_id.clone(),
            duration: config.lease,
        };

        // Work a previous run left leased would otherwise wait for its leases to expire.
        let release_owner = if store.single_process() {
            None
        } else {
            Some(&*node_id)
        };
        let released = store.release_leases(release_owner).await?;
        if released > 0 {
            tracing::info!(
                deliveries = released,
                "resuming deliveries left in flight by the previous run"
            );
        }

        let background = TaskTracker::new();
        let commit_stop = CancellationToken::new();
        let source = if store.single_process() {
            Source::Committer
        } else {
            Source::SharedLog
        };
        let hub = EventHub::new(WATCH_WINDOW, source);
        let committer = Committer::spawn(
            store.clone(),
            hub.clone(),
            config.commit_batch,
            &background,
            commit_stop.clone(),
        );
        let cache = SubscriptionCache::new(store.clone(), config.cache_ttl);
        let wakeup = Arc::new(Wakeup::default());
        let target_policy = Arc::new(TargetPolicy {
            allow_all: config.allow_private_targets,
            allowed: config.allow_target_cidrs.clone(),
        });
        let context = AttemptContext {
            client: client::build(config.attempt_timeout, target_policy.clone()),
            retry: Arc::new(RetryPolicy::new(
                config.retry_schedule.0.clone(),
                config.retry_jitter,
            )),
            timeout: config.attempt_timeout,
            policy: target_policy.clone(),
            node_id: node_id.clone(),
        };
        let (dispatcher, hot) = Dispatcher::new(
            store.clone(),
            cache.clone(),
            committer.clone(),
            context,
            DispatcherSettings {
                max_in_flight: config.max_in_flight,
                max_in_flight_per_subscription: config.max_in_flight_per_subscription,
                poll_interval: config.poll_interval,
                lease: lease.clone(),
            },
            wakeup.clone(),
        );
        // Other nodes' announcements (PostgreSQL only): due work, changed subscriptions, new log entries.
        let follower_stop = CancellationToken::new();
        let watch_stop = CancellationToken::new();
        if let Some(notifications) = store.notifications().await? {
            let follower = Follower {
                store: store.clone(),
                cache: cache.clone(),
                wakeup: wakeup.clone(),
                hub: hub.clone(),
            };
            background.spawn(follower.run(notifications, follower_stop.clone()));
        }
        let service = Service::new(
            store.clone(),
            cache,
            committer,
            hub,
            hot,
            wakeup,
            ServiceSettings {
                max_body_size: config.max_body_size,
                secret_rotation_grace: config.secret_rotation_grace,
                lease,
                target_policy,
                watch_stop: watch_stop.clone(),
            },
        );

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<SubscriptionServiceServer<api::subscriptions::SubscriptionsApi>>()
            .await;
        health_reporter
            .set_serving::<DeliveryServiceServer<api::deliveries::DeliveriesApi>>()
            .await;

        let ingest_stop = CancellationToken::new();
        let connections = TaskTracker::new();
        let gateway_task = tokio::spawn(gateway::serve(
            http_listener,
            service.clone(),
            GatewaySettings {
                header_read_timeout: config.header_read_timeout,
                api_token: config.api_token.clone(),
            },
            ingest_stop.clone(),
            connections.clone(),
        ));

        let grpc_stop = CancellationToken::new();
        if config.api_token.is_none() && !grpc_addr.ip().is_loopback() {
            tracing::warn!(grpc = %grpc_addr, "the gRPC API is reachable from other machines without authentication (--insecure)");
        }
        let auth = api::auth::RequireToken::new(config.api_token.as_deref());
        let grpc_task = tokio::spawn(api::serve(
            grpc_listener,
            service.clone(),
            health_service,
            auth,
            config.cors_allow_origins.clone(),
            grpc_stop.clone(),
        ));

        let worker_stop = CancellationToken::new();
        let attempt_abort = CancellationToken::new();
        let attempts = TaskTracker::new();
        let dispatcher_task = tokio::spawn(dispatcher.run(
            worker_stop.clone(),
            attempt_abort.clone(),
            attempts.clone(),
        ));

        let retention_stop = CancellationToken::new();
        background.spawn(retention::run(
            store.clone(),
            RetentionSettings {
                retention: config.retention,
                interval: config.purge_interval,
                batch: config.purge_batch,
            },
            retention_stop.clone(),
        ));

        let indexing_stop = CancellationToken::new();
        background.spawn(attempt_index::run(store.clone(), indexing_stop.clone()));

        tracing::info!(grpc = %grpc_addr, http = %http_addr, node = %node_id, "whd is serving");
        shutdown.cancelled().await;
        tracing::info!(grace = ?config.shutdown_grace, "shutting down");
        let deadline = tokio::time::Instant::now() + config.shutdown_grace;

        // 1. No new webhooks; requests already being read finish.
        ingest_stop.cancel();
        let _ = gateway_task.await;
        connections.close();
        wait_until(&connections, deadline).await;
        // 2. Load balancers stop sending.
        health_reporter
            .set_not_serving::<SubscriptionServiceServer<api::subscriptions::SubscriptionsApi>>()
            .await;
        health_reporter
            .set_not_serving::<DeliveryServiceServer<api::deliveries::DeliveriesApi>>()
            .await;
        // 3. Workers stop claiming; attempts in flight finish, or are abandoned at the deadline and
        //    retried after restart.
        worker_stop.cancel();
        let _ = dispatcher_task.await;
        attempts.close();
        if !wait_until(&attempts, deadline).await {
            tracing::warn!(
                "attempts still running at the end of the grace period were abandoned; they will be retried"
            );
            attempt_abort.cancel();
            attempts.wait().await;
        }
        // 4. Commit what is queued, stop the purge, end gRPC calls and streams.
        commit_stop.cancel();
        retention_stop.cancel();
        indexing_stop.cancel();
        follower_stop.cancel();
        background.close();
        background.wait().await;
        watch_stop.cancel();
        grpc_stop.cancel();
        // Calls still open at the deadline (a client that ignores the end of its stream) are dropped.
        let mut grpc_task = grpc_task;
        let grpc_deadline = deadline.max(tokio::time::Instant::now() + Duration::from_secs(1));
        match tokio::time::timeout_at(grpc_deadline, &mut grpc_task).await {
            Ok(Ok(Err(error))) => tracing::warn!(error = %error, "gRPC server ended with an error"),
            Ok(_) => {}
            Err(_) => {
                grpc_task.abort();
                tracing::warn!("gRPC calls still open at the end of the grace period were dropped");
            }
        }
        // 5. Tasks this node still held go back to the queue for whichever node runs next.
        if let Err(error) = store.release_leases(Some(&*node_id)).await {
            tracing::warn!(error = %error, "could not release leases; they will expire");
        }
        store.close().await;
        tracing::info!("shutdown complete");
        Ok(())
    }
}

async fn bind(address: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Bind { address, source })
}

fn local_addr(listener: &TcpListener, address: SocketAddr) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { address, source })
}

/// Waits for `tracker`'s tasks until `deadline`; true when they all finished.
async fn wait_until(tracker: &TaskTracker, deadline: tokio::time::Instant) -> bool {
    tokio::time::timeout_at(deadline, tracker.wait())
        .await
        .is_ok()
}
