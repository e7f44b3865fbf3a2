//! Typed configuration: defaults, then `WHD_*` environment variables, then flags (clap handles the
//! layering). [`Config::validate`] checks the rules that span fields, once, before anything starts.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that parsed but breaks a rule.
    #[error("{field}: {rule}")]
    Invalid {
        /// The flag, e.g. `--lease`.
        field: &'static str,
        /// What it must be.
        rule: String,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// SQLite durability of acknowledged webhooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SqliteSync {
    /// fsync on every commit: a 202 survives power loss.
    Full,
    /// fsync at checkpoints only: a 202 survives a crash of `whd`, not of the machine.
    Normal,
}

/// Everything `whd` can be told. Every flag has a `WHD_*` environment equivalent.
#[derive(Debug, Clone, Parser)]
// A flag given twice takes its last value, so wrappers can append overrides to a base command line.
#[command(
    name = "whd",
    version,
    about = "whd: webhook delivery service",
    args_override_self = true
)]
pub struct Config {
    /// Database: a SQLite file path or `sqlite://path`, or a `postgres://` URL. The SQLite file is
    /// created and migrated on first start.
    #[arg(long, env = "WHD_DATABASE_URL", default_value = "sqlite://whd.db")]
    pub database_url: String,

    /// Address of the gRPC API (subscriptions, deliveries, health, reflection).
    #[arg(long, env = "WHD_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,

    /// Address of the HTTP gateway: `POST /ingest/{subscription_id}`, `/healthz`, the `/v1` JSON API
    /// and the dashboard at `/`.
    #[arg(long, env = "WHD_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Delays between attempts, comma-separated; one retry per entry after the initial attempt.
    #[arg(long, env = "WHD_RETRY_SCHEDULE", default_value = "10s,30s,1m,5m,15m", value_parser = parse_schedule)]
    pub retry_schedule: RetrySchedule,

    /// Random spread added to each retry delay, as a fraction of it (0 switches jitter off).
    #[arg(long, env = "WHD_RETRY_JITTER", default_value_t = 0.1)]
    pub retry_jitter: f64,

    /// Time limit of one delivery attempt: connect, send, and read the (capped) response.
    #[arg(long, env = "WHD_ATTEMPT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub attempt_timeout: Duration,

    /// How long attempt logs and finished deliveries are kept.
    #[arg(long, env = "WHD_RETENTION", default_value = "72h", value_parser = parse_duration)]
    pub retention: Duration,

    /// How often the retention purge runs.
    #[arg(long, env = "WHD_PURGE_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub purge_interval: Duration,

    /// Rows deleted per purge statement; bounds how long one purge holds the writer.
    #[arg(long, env = "WHD_PURGE_BATCH", default_value_t = 1000)]
    pub purge_batch: u32,

    /// Largest accepted ingest body, e.g. `1MiB`, `64KiB`, or a number of bytes.
    #[arg(long, env = "WHD_MAX_BODY_SIZE", default_value = "1MiB", value_parser = parse_size)]
    pub max_body_size: u64,

    /// Most delivery attempts in flight at once, across all subscriptions.
    #[arg(long, env = "WHD_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,

    /// Most delivery attempts in flight at once to one subscription, so that a slow or hanging target
    /// cannot take every slot from the others.
    #[arg(long, env = "WHD_MAX_IN_FLIGHT_PER_SUBSCRIPTION", default_value_t = 64)]
    pub max_in_flight_per_subscription: usize,

    /// How long a node owns a task it is attempting. Must exceed the attempt timeout by 5s or more,
    /// so that a live attempt is never taken over.
    #[arg(long, env = "WHD_LEASE", default_value = "60s", value_parser = parse_duration)]
    pub lease: Duration,

    /// How often workers look for due retries when nothing woke them.
    #[arg(long, env = "WHD_POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// Time-to-live of cached subscriptions; a safety net behind explicit invalidation.
    #[arg(long, env = "WHD_CACHE_TTL", default_value = "5m", value_parser = parse_duration)]
    pub cache_ttl: Duration,

    /// Most writes (ingests, attempt results) committed in one transaction.
    #[arg(long, env = "WHD_COMMIT_BATCH", default_value_t = 512)]
    pub commit_batch: usize,

    /// SQLite durability: `full` (default) survives power loss, `normal` survives a process crash.
    #[arg(long, env = "WHD_SQLITE_SYNC", value_enum, default_value_t = SqliteSync::Full)]
    pub sqlite_sync: SqliteSync,

    /// How long a replaced signing secret keeps signing deliveries after a rotation.
    #[arg(long, env = "WHD_SECRET_ROTATION_GRACE", default_value = "24h", value_parser = parse_duration)]
    pub secret_rotation_grace: Duration,

    /// Time a client has to send its request headers before the connection is closed.
    #[arg(long, env = "WHD_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// How long shutdown waits for in-flight attempts before leaving them to the next start.
    #[arg(long, env = "WHD_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Address range deliveries may reach even though it is internal (loopback, private, link-local…),
    /// e.g. `127.0.0.0/8`. Repeatable; the environment variable takes a comma-separated list.
    #[arg(
        long = "allow-target-cidr",
        env = "WHD_ALLOW_TARGET_CIDR",
        value_delimiter = ','
    )]
    pub allow_target_cidrs: Vec<ipnet::IpNet>,

    /// Let deliveries reach every internal address. For local development only.
    #[arg(long, env = "WHD_ALLOW_PRIVATE_TARGETS")]
    pub allow_private_targets: bool,

    /// Bearer token every gRPC call and every `/v1` JSON call (hence the dashboard) must carry
    /// (`authorization: Bearer <token>`). Health, reflection and ingest stay open. Unset: no
    /// authentication, which is only allowed when both ports are on loopback.
    #[arg(long, env = "WHD_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// Allow serving gRPC or HTTP on a non-loopback address without an API token.
    #[arg(long, env = "WHD_INSECURE")]
    pub insecure: bool,

    /// Most database connections this node opens (PostgreSQL; SQLite uses one writer and this many
    /// readers).
    #[arg(long, env = "WHD_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// Origin allowed to call the gRPC API from a browser with gRPC-Web (CORS), e.g.
    /// `https://ops.example.com`. Repeatable; `*` allows any origin. Default: none (same-origin only).
    #[arg(
        long = "cors-allow-origin",
        env = "WHD_CORS_ALLOW_ORIGIN",
        value_delimiter = ','
    )]
    pub cors_allow_origins: Vec<String>,

    /// Name of this node in leases; defaults to a random name per process.
    #[arg(long, env = "WHD_NODE_ID")]
    pub node_id: Option<String>,

    /// Log format.
    #[arg(long, env = "WHD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Config {
    /// The configuration from defaults and the given arguments only, ignoring the environment's flags
    /// beyond what clap reads; for tests and embedding.
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Config::try_parse_from(args)
    }

    /// Checks rules that span fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let margin = Duration::from_secs(5);
        if self.lease < self.attempt_timeout + margin {
            return Err(ConfigError::Invalid {
                field: "--lease",
                rule: format!(
                    "must be at least the attempt timeout plus 5s ({}), so that a live attempt is never taken over",
                    humantime::format_duration(self.attempt_timeout + margin)
                ),
            });
        }
        if !(0.0..=1.0).contains(&self.retry_jitter) {
            return Err(ConfigError::Invalid {
                field: "--retry-jitter",
                rule: "must be between 0 and 1".into(),
            });
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::Invalid {
                field: "--max-in-flight",
                rule: "must be at least 1".into(),
            });
        }
        if self.commit_batch == 0 {
            return Err(ConfigError::Invalid {
                field: "--commit-batch",
                rule: "must be at least 1".into(),
            });
        }
        if self
            .api_token
            .as_deref()
            .is_some_and(|token| token.trim().len() < 16)
        {
            return Err(ConfigError::Invalid {
                field: "--api-token",
                rule: "must be at least 16 characters".into(),
            });
        }
        // The gateway serves the management JSON API and the dashboard next to ingest, so a public
        // HTTP address needs the token as much as a public gRPC address does.
        if self.api_token.is_none() && !self.http_addr.ip().is_loopback() && !self.insecure {
            return Err(ConfigError::Invalid {
                field: "--http-addr",
                rule: format!(
                    "{} is reachable from other machines: set --api-token (it protects /v1 and the dashboard; ingest stays open), or pass --insecure",
                    self.http_addr
                ),
            });
        }
        if self.api_token.is_none() && !self.grpc_addr.ip().is_loopback() && !self.insecure {
            return Err(ConfigError::Invalid {
                field: "--grpc-addr",
                rule: format!(
                    "{} is reachable from other machines: set --api-token, or pass --insecure to serve it without authentication",
                    self.grpc_addr
                ),
            });
        }
        if self.purge_batch == 0 {
            return Err(ConfigError::Invalid {
                field: "--purge-batch",
                rule: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// Delays before each retry; its length is the number of retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<Duration>);

fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim())
        .map_err(|error| format!("{error} (use e.g. 500ms, 10s, 5m, 72h)"))
}

fn parse_schedule(value: &str) -> Result<RetrySchedule, String> {
    if value.trim().is_empty() || value.trim() == "none" {
        return Ok(RetrySchedule(Vec::new()));
    }
    value
        .split(',')
        .map(parse_duration)
        .collect::<Result<Vec<_>, _>>()
        .map(RetrySchedule)
}

fn parse_size(value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
        .map_err(|error| format!("{error} (use e.g. 1MiB, 64KiB or a number of bytes)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        Config::from_args(std::iter::once("whd").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let config = config(&[]);
        assert_eq!(config.grpc_addr.to_string(), "127.0.0.1:50051");
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.attempt_timeout, Duration::from_secs(10));
        assert_eq!(config.retention, Duration::from_secs(72 * 3600));
        assert_eq!(config.max_body_size, 1024 * 1024);
        let secs: Vec<u64> = config
            .retry_schedule
            .0
            .iter()
            .map(Duration::as_secs)
            .collect();
        assert_eq!(secs, [10, 30, 60, 300, 900]);
        config.validate().unwrap();
    }

    #[test]
    fn human_durations_and_sizes_parse() {
        let config = config(&[
            "--retry-schedule",
            "100ms,200ms",
            "--attempt-timeout",
            "1s",
            "--lease",
            "6s",
            "--max-body-size",
            "64KiB",
        ]);
        assert_eq!(
            config.retry_schedule.0,
            [Duration::from_millis(100), Duration::from_millis(200)]
        );
        assert_eq!(config.max_body_size, 64 * 1024);
        config.validate().unwrap();
        assert!(parse_duration("ten seconds").is_err());
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_schedule("none").unwrap().0, []);
    }

    #[test]
    fn a_public_grpc_address_needs_a_token_or_insecure() {
        let error = config(&["--grpc-addr", "0.0.0.0:50051"])
            .validate()
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("set --api-token, or pass --insecure"),
            "{error}"
        );
        config(&["--grpc-addr", "0.0.0.0:50051", "--insecure"])
            .validate()
            .unwrap();
        config(&[
            "--grpc-addr",
            "0.0.0.0:50051",
            "--api-token",
            "0123456789abcdef",
        ])
        .validate()
        .unwrap();
        assert!(config(&["--api-token", "short"]).validate().is_err());
    }

    #[test]
    fn a_public_http_address_needs_a_token_or_insecure() {
        let error = config(&["--http-addr", "0.0.0.0:8080"])
            .validate()
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("--http-addr: 0.0.0.0:8080 is reachable"),
            "{error}"
        );
        config(&[
            "--http-addr",
            "0.0.0.0:8080",
            "--api-token",
            "0123456789abcdef",
        ])
        .validate()
        .unwrap();
    }

    #[test]
    fn a_flag_given_twice_takes_its_last_value() {
        let config = config(&["--retry-schedule", "1s", "--retry-schedule", "2s"]);
        assert_eq!(config.retry_schedule.0, [Duration::from_secs(2)]);
    }

    #[test]
    fn allowed_target_ranges_repeat() {
        let config = config(&[
            "--allow-target-cidr",
            "127.0.0.0/8",
            "--allow-target-cidr",
            "::1/128",
        ]);
        assert_eq!(config.allow_target_cidrs.len(), 2);
    }

    #[test]
    fn a_lease_shorter_than_the_attempt_timeout_plus_margin_is_refused() {
        let error = config(&["--attempt-timeout", "10s", "--lease", "12s"])
            .validate()
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("--lease: must be at least the attempt timeout plus 5s"),
            "{error}"
        );
    }
}
