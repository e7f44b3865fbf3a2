//! `whd.v1.SubscriptionService`: decode, call the service, encode.

use tonic::{Request, Response, Status};
use whd_proto::v1;
use whd_proto::v1::subscription_service_server::SubscriptionService;

use super::convert;
use crate::service::Service;

/// The handlers.
#[derive(Debug, Clone)]
pub struct SubscriptionsApi {
    service: Service,
}

impl SubscriptionsApi {
    /// Handlers over `service`.
    pub fn new(service: Service) -> Self {
        SubscriptionsApi { service }
    }
}

#[tonic::async_trait]
impl SubscriptionService for SubscriptionsApi {
    async fn create_subscription(
        &self,
        request: Request<v1::CreateSubscriptionRequest>,
    ) -> Result<Response<v1::Subscription>, Status> {
        let input = convert::new_subscription(request.into_inner())?;
        let created = self.service.create_subscription(input).await?;
        let mut subscription = convert::subscription(&created.subscription);
        // The one place a generated secret is shown.
        if let Some(secret) = created.generated_secret {
            subscription.secret = secret.expose().to_owned();
        }
        Ok(Response::new(subscription))
    }

    async fn get_subscription(
        &self,
        request: Request<v1::GetSubscriptionRequest>,
    ) -> Result<Response<v1::Subscription>, Status> {
        let subscription = self
            .service
            .get_subscription(&request.into_inner().id)
            .await?;
        Ok(Response::new(convert::subscription(&subscription)))
    }

    async fn list_subscriptions(
        &self,
        request: Request<v1::ListSubscriptionsRequest>,
    ) -> Result<Response<v1::ListSubscriptionsResponse>, Status> {
        let request = request.into_inner();
        let page = self
            .service
            .list_subscriptions(request.page_size, &request.page_token)
            .await?;
        Ok(Response::new(v1::ListSubscriptionsResponse {
            subscriptions: page
                .subscriptions
                .iter()
                .map(convert::subscription)
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_subscription(
        &self,
        request: Request<v1::UpdateSubscriptionRequest>,
    ) -> Result<Response<v1::Subscription>, Status> {
        let (id, patch) = convert::subscription_patch(request.into_inner())?;
        let subscription = self.service.update_subscription(&id, patch).await?;
        Ok(Response::new(convert::subscription(&subscription)))
    }

    async fn delete_subscription(
        &self,
        request: Request<v1::DeleteSubscriptionRequest>,
    ) -> Result<Response<pbjson_types::Empty>, Status> {
        self.service
            .delete_subscription(&request.into_inner().id)
            .await?;
        Ok(Response::new(pbjson_types::Empty {}))
    }

    async fn get_subscription_secret(
        &self,
        request: Request<v1::GetSubscriptionSecretRequest>,
    ) -> Result<Response<v1::SubscriptionSecret>, Status> {
        let secret = self
            .service
            .get_subscription_secret(&request.into_inner().id)
            .await?;
        Ok(Response::new(v1::SubscriptionSecret {
            secret: secret
                .map(|secret| secret.expose().to_owned())
                .unwrap_or_default(),
        }))
    }
}
