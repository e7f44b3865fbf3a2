//! `whd.v1.DeliveryService`: delivery status, the attempt log, and the live event stream.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use whd_proto::v1;
use whd_proto::v1::delivery_service_server::DeliveryService;

use super::convert;
use crate::service::Service;

/// The handlers.
#[derive(Debug, Clone)]
pub struct DeliveriesApi {
    service: Service,
}

impl DeliveriesApi {
    /// Handlers over `service`.
    pub fn new(service: Service) -> Self {
        DeliveriesApi { service }
    }
}

/// The stream type of `WatchDeliveries`.
pub type DeliveryEventStream =
    Pin<Box<dyn Stream<Item = Result<v1::DeliveryEvent, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl DeliveryService for DeliveriesApi {
    async fn get_delivery(
        &self,
        request: Request<v1::GetDeliveryRequest>,
    ) -> Result<Response<v1::Delivery>, Status> {
        let details = self.service.get_delivery(&request.into_inner().id).await?;
        Ok(Response::new(convert::delivery(&details)))
    }

    async fn list_delivery_attempts(
        &self,
        request: Request<v1::ListDeliveryAttemptsRequest>,
    ) -> Result<Response<v1::ListDeliveryAttemptsResponse>, Status> {
        let request = request.into_inner();
        let page = self
            .service
            .list_delivery_attempts(
                &request.subscription_id,
                request.page_size,
                &request.page_token,
            )
            .await?;
        Ok(Response::new(v1::ListDeliveryAttemptsResponse {
            attempts: page.attempts.iter().filter_map(convert::attempt).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    type WatchDeliveriesStream = DeliveryEventStream;

    async fn watch_deliveries(
        &self,
        request: Request<v1::WatchDeliveriesRequest>,
    ) -> Result<Response<Self::WatchDeliveriesStream>, Status> {
        let (filter, after_cursor) = convert::watch_request(request.get_ref())?;
        let items = self.service.watch(filter, after_cursor).await?;
        // tonic polls this stream only as fast as the client reads; when the client goes away the
        // stream is dropped, which unsubscribes it from the hub.
        let events = items.map(|item| {
            item.map(|item| convert::watch_item(&item))
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(events)))
    }
}
