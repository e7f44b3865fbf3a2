//! [`Client`]: one handle over the gRPC API (subscriptions, deliveries, the event stream) and the HTTP
//! ingest endpoint.
//!
//! A `Client` is cheap to clone; clones share the gRPC channel and the HTTP connection pool.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio_stream::Stream;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::ingest::{IngestClient, IngestOptions, IngestReceipt, bearer_header};
use crate::proto::delivery_service_client::DeliveryServiceClient;
use crate::proto::subscription_service_client::SubscriptionServiceClient;
use crate::proto::{
    CreateSubscriptionRequest, DeleteSubscriptionRequest, Delivery, DeliveryEvent,
    GetDeliveryRequest, GetSubscriptionRequest, GetSubscriptionSecretRequest,
    ListDeliveryAttemptsRequest, ListDeliveryAttemptsResponse, ListSubscriptionsRequest,
    ListSubscriptionsResponse, Subscription, SubscriptionSecret, UpdateSubscriptionRequest,
    WatchDeliveriesRequest,
};
use crate::{ClientConfig, DEFAULT_SERVER, Error};

/// Gives up dialling the gRPC server after this long, so a wrong address fails instead of hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The channel every generated client runs on: adds the API token to each request.
type AuthChannel = InterceptedService<Channel, BearerAuth>;

/// Async client for a whd server.
///
/// Build one with [`Client::connect`] (dials now, fails fast when the server is down) or
/// [`Client::connect_lazy`] (dials on first use).
#[derive(Clone, Debug)]
pub struct Client {
    subscriptions: SubscriptionServiceClient<AuthChannel>,
    deliveries: DeliveryServiceClient<AuthChannel>,
    ingest: IngestClient,
}

impl Client {
    /// Connects to the gRPC server named in `config` and prepares the ingest client.
    ///
    /// Fails with [`Error::Transport`] when the server cannot be reached and with
    /// [`Error::InvalidConfig`] when a URL or the token is unusable.
    pub async fn connect(config: ClientConfig) -> Result<Self, Error> {
        let endpoint = grpc_endpoint(&config.server)?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| Error::Transport {
                address: config.server.clone(),
                source,
            })?;
        Self::with_channel(channel, &config)
    }

    /// Builds a client that connects on its first call (and reconnects as needed).
    ///
    /// Connection failures then surface as [`Error::Status`] with code `UNAVAILABLE`. Must be called
    /// from within a Tokio runtime.
    pub fn connect_lazy(config: ClientConfig) -> Result<Self, Error> {
        let channel = grpc_endpoint(&config.server)?.connect_lazy();
        Self::with_channel(channel, &config)
    }

    fn with_channel(channel: Channel, config: &ClientConfig) -> Result<Self, Error> {
        let auth = BearerAuth::new(config.api_token.as_deref())?;
        Ok(Self {
            subscriptions: SubscriptionServiceClient::with_interceptor(
                channel.clone(),
                auth.clone(),
            ),
            deliveries: DeliveryServiceClient::with_interceptor(channel, auth),
            ingest: IngestClient::new(&config.ingest_url, config.api_token.as_deref())?,
        })
    }

    /// Creates a subscription; the server assigns its id. When `generate_secret` is set, the response
    /// carries the new secret (the only time it is returned outside
    /// [`get_subscription_secret`](Self::get_subscription_secret)).
    pub async fn create_subscription(
        &self,
        request: CreateSubscriptionRequest,
    ) -> Result<Subscription, Error> {
        let response = self
            .subscriptions
            .clone()
            .create_subscription(request)
            .await?;
        Ok(response.into_inner())
    }

    /// Returns the subscription with this id, without its secret.
    pub async fn get_subscription(&self, id: impl Into<String>) -> Result<Subscription, Error> {
        let request = GetSubscriptionRequest { id: id.into() };
        let response = self.subscriptions.clone().get_subscription(request).await?;
        Ok(response.into_inner())
    }

    /// Lists one page of subscriptions, oldest first.
    pub async fn list_subscriptions(
        &self,
        request: ListSubscriptionsRequest,
    ) -> Result<ListSubscriptionsResponse, Error> {
        let response = self
            .subscriptions
            .clone()
            .list_subscriptions(request)
            .await?;
        Ok(response.into_inner())
    }

    /// Updates the fields of a subscription named in `request.update_mask`.
    pub async fn update_subscription(
        &self,
        request: UpdateSubscriptionRequest,
    ) -> Result<Subscription, Error> {
        let response = self
            .subscriptions
            .clone()
            .update_subscription(request)
            .await?;
        Ok(response.into_inner())
    }

    /// Deletes a subscription; its pending deliveries end as failed.
    pub async fn delete_subscription(&self, id: impl Into<String>) -> Result<(), Error> {
        let request = DeleteSubscriptionRequest { id: id.into() };
        self.subscriptions
            .clone()
            .delete_subscription(request)
            .await?;
        Ok(())
    }

    /// Returns the signing secret of a subscription (empty when it has none).
    pub async fn get_subscription_secret(
        &self,
        id: impl Into<String>,
    ) -> Result<SubscriptionSecret, Error> {
        let request = GetSubscriptionSecretRequest { id: id.into() };
        let response = self
            .subscriptions
            .clone()
            .get_subscription_secret(request)
            .await?;
        Ok(response.into_inner())
    }

    /// Returns a delivery with its status and every attempt, oldest first.
    pub async fn get_delivery(&self, id: impl Into<String>) -> Result<Delivery, Error> {
        let request = GetDeliveryRequest { id: id.into() };
        let response = self.deliveries.clone().get_delivery(request).await?;
        Ok(response.into_inner())
    }

    /// Lists one page of a subscription's delivery attempts, newest first.
    pub async fn list_delivery_attempts(
        &self,
        request: ListDeliveryAttemptsRequest,
    ) -> Result<ListDeliveryAttemptsResponse, Error> {
        let response = self
            .deliveries
            .clone()
            .list_delivery_attempts(request)
            .await?;
        Ok(response.into_inner())
    }

    /// Opens a stream of delivery events matching `request`, replaying logged events after
    /// `request.after_cursor` first when it is set. The stream ends when the server ends it.
    pub async fn watch_deliveries(
        &self,
        request: WatchDeliveriesRequest,
    ) -> Result<DeliveryEventStream, Error> {
        let response = self.deliveries.clone().watch_deliveries(request).await?;
        Ok(DeliveryEventStream {
            inner: response.into_inner(),
        })
    }

    /// Posts a webhook `body` (JSON) to the ingest endpoint for `subscription_id`.
    ///
    /// Succeeds once the server has stored the webhook (HTTP 202); the receipt tells whether a delivery
    /// was created or the subscription's event-type filter dropped it. Other answers become
    /// [`Error::Ingest`] with the server's message.
    pub async fn ingest(
        &self,
        subscription_id: &str,
        body: impl Into<Bytes>,
        options: IngestOptions,
    ) -> Result<IngestReceipt, Error> {
        self.ingest
            .ingest(subscription_id, body.into(), options)
            .await
    }
}

/// Parses the gRPC server address into an endpoint with the SDK's connection settings.
fn grpc_endpoint(server: &str) -> Result<Endpoint, Error> {
    let invalid = |reason: &str| {
        Error::InvalidConfig(format!(
            "server url {server:?} {reason} (expected e.g. {DEFAULT_SERVER})"
        ))
    };
    // The endpoint parser accepts scheme-less strings such as `localhost` and only fails when
    // dialling; checking here turns that into a configuration error that names the problem.
    let uri: http::Uri = server.parse().map_err(|_| invalid("is not a valid url"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(invalid("must be an absolute http:// or https:// url"));
    }
    let endpoint =
        Endpoint::from_shared(server.to_owned()).map_err(|_| invalid("is not a valid url"))?;
    Ok(endpoint.connect_timeout(CONNECT_TIMEOUT))
}

/// Adds `authorization: Bearer <token>` to every gRPC request when a token is configured.
#[derive(Clone, Debug)]
struct BearerAuth {
    /// Marked sensitive, so `Debug` prints `Sensitive` instead of the token.
    authorization: Option<AsciiMetadataValue>,
}

impl BearerAuth {
    fn new(api_token: Option<&str>) -> Result<Self, Error> {
        let authorization = match api_token {
            None => None,
            Some(token) => {
                let header = bearer_header(token)?;
                let mut value = AsciiMetadataValue::try_from(header.as_bytes()).map_err(|_| {
                    Error::InvalidConfig("api token is not valid gRPC metadata".into())
                })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        Ok(Self { authorization })
    }
}

impl Interceptor for BearerAuth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        Ok(request)
    }
}

/// Live delivery events from [`Client::watch_deliveries`].
///
/// Read it with [`message`](Self::message) or as a [`Stream`] of `Result<DeliveryEvent, Error>`.
#[derive(Debug)]
pub struct DeliveryEventStream {
    inner: tonic::Streaming<DeliveryEvent>,
}

impl DeliveryEventStream {
    /// Waits for the next event; `Ok(None)` when the server ended the stream.
    pub async fn message(&mut self) -> Result<Option<DeliveryEvent>, Error> {
        Ok(self.inner.message().await?)
    }
}

impl Stream for DeliveryEventStream {
    type Item = Result<DeliveryEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner)
            .poll_next(cx)
            .map(|item| item.map(|result| result.map_err(Error::from)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interceptor_adds_the_bearer_token() {
        let mut auth = BearerAuth::new(Some("t0ken")).unwrap();

        let request = auth.call(tonic::Request::new(())).unwrap();

        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer t0ken"
        );
        assert!(!format!("{auth:?}").contains("t0ken"));
    }

    #[test]
    fn interceptor_without_token_leaves_requests_alone() {
        let mut auth = BearerAuth::new(None).unwrap();

        let request = auth.call(tonic::Request::new(())).unwrap();

        assert!(request.metadata().get("authorization").is_none());
    }

    #[test]
    fn token_with_a_newline_is_an_invalid_config() {
        let error = BearerAuth::new(Some("t0ken\n")).unwrap_err();

        assert!(matches!(error, Error::InvalidConfig(_)), "{error:?}");
    }

    #[test]
    fn server_url_must_be_absolute_http() {
        assert!(grpc_endpoint("http://127.0.0.1:50051").is_ok());
        for bad in [
            "not a url",
            "localhost",
            "localhost:50051",
            "ftp://host:1",
            "/path",
        ] {
            let error = grpc_endpoint(bad).unwrap_err();
            assert!(matches!(error, Error::InvalidConfig(_)), "{bad}: {error:?}");
        }
    }
}
