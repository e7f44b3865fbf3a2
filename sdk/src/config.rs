//! Client configuration: where the gRPC API and the ingest endpoint live, and the API token.
//!
//! Values are plain strings here; they are checked once, when a [`Client`](crate::Client) is built.

use std::fmt;

/// Default address of the gRPC API.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// Default base URL of the HTTP ingest endpoint.
pub const DEFAULT_INGEST_URL: &str = "http://127.0.0.1:8080";

/// Environment variable naming the gRPC API address.
pub const ENV_SERVER: &str = "WHD_SERVER";

/// Environment variable naming the ingest base URL.
pub const ENV_INGEST_URL: &str = "WHD_INGEST_URL";

/// Environment variable holding the API token.
pub const ENV_API_TOKEN: &str = "WHD_API_TOKEN";

/// Where to reach a whd server and how to authenticate to it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// URL of the gRPC API, e.g. `http://127.0.0.1:50051` (the default).
    pub server: String,
    /// Base URL of the HTTP ingest endpoint, e.g. `http://127.0.0.1:8080` (the default).
    /// Webhooks are posted to `{ingest_url}/ingest/{subscription_id}`.
    pub ingest_url: String,
    /// Token sent as `authorization: Bearer <token>` on every request; none by default.
    pub api_token: Option<String>,
}

impl ClientConfig {
    /// Builds a configuration from `WHD_SERVER`, `WHD_INGEST_URL` and `WHD_API_TOKEN`, falling back to
    /// the defaults for variables that are unset or empty.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds a configuration the way [`from_env`](Self::from_env) does, reading variables through
    /// `lookup` instead of the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        // An exported-but-empty variable (`WHD_API_TOKEN=`) is treated as unset, so that a shell can
        // switch a setting off without `unset`.
        let non_empty = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let defaults = Self::default();
        Self {
            server: non_empty(ENV_SERVER).unwrap_or(defaults.server),
            ingest_url: non_empty(ENV_INGEST_URL).unwrap_or(defaults.ingest_url),
            api_token: non_empty(ENV_API_TOKEN),
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            server: DEFAULT_SERVER.to_owned(),
            ingest_url: DEFAULT_INGEST_URL.to_owned(),
            api_token: None,
        }
    }
}

// Written by hand so that the token never ends up in logs.
impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("server", &self.server)
            .field("ingest_url", &self.ingest_url)
            .field("api_token", &self.api_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup_in(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn from_lookup_uses_defaults_when_nothing_is_set() {
        let config = ClientConfig::from_lookup(lookup_in(&[]));

        assert_eq!(config, ClientConfig::default());
        assert_eq!(config.server, "http://127.0.0.1:50051");
        assert_eq!(config.ingest_url, "http://127.0.0.1:8080");
        assert_eq!(config.api_token, None);
    }

    #[test]
    fn from_lookup_reads_every_variable() {
        let config = ClientConfig::from_lookup(lookup_in(&[
            ("WHD_SERVER", "http://whd:9000"),
            ("WHD_INGEST_URL", "http://whd:9001"),
            ("WHD_API_TOKEN", "t0ken"),
        ]));

        assert_eq!(config.server, "http://whd:9000");
        assert_eq!(config.ingest_url, "http://whd:9001");
        assert_eq!(config.api_token.as_deref(), Some("t0ken"));
    }

    #[test]
    fn from_lookup_treats_empty_values_as_unset() {
        let config =
            ClientConfig::from_lookup(lookup_in(&[("WHD_SERVER", ""), ("WHD_API_TOKEN", "  ")]));

        assert_eq!(config.server, DEFAULT_SERVER);
        assert_eq!(config.api_token, None);
    }

    #[test]
    fn debug_output_hides_the_token() {
        let config = ClientConfig {
            api_token: Some("s3cret".into()),
            ..ClientConfig::default()
        };

        let debug = format!("{config:?}");

        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }
}
