//! Delivery status and the attempt log.

use crate::domain::{DeliveryId, SubscriptionId};
use crate::error::{ErrorCode, ServiceError};
use crate::store::{DeliveryRecord, LoggedEvent};

use super::{Service, page_size, store_error};

/// Default and largest page of attempts.
const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 1000;

/// A delivery with its attempts, oldest first.
#[derive(Debug, Clone)]
pub struct DeliveryDetails {
    /// Its state.
    pub delivery: DeliveryRecord,
    /// Its attempts.
    pub attempts: Vec<LoggedEvent>,
}

/// One page of a subscription's attempts, newest first.
#[derive(Debug, Clone)]
pub struct AttemptPage {
    /// The attempts.
    pub attempts: Vec<LoggedEvent>,
    /// Where the next page starts; empty at the end.
    pub next_page_token: String,
}

impl Service {
    /// Reads a delivery and its attempt history.
    pub async fn get_delivery(&self, id: &str) -> Result<DeliveryDetails, ServiceError> {
        let id = DeliveryId::parse(id)?;
        let store = &self.inner.store;
        let delivery = store
            .get_delivery(&id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ServiceError::not_found("delivery", id.as_str()))?;
        let attempts = store.delivery_attempts(&id).await.map_err(store_error)?;
        Ok(DeliveryDetails { delivery, attempts })
    }

    /// Lists a subscription's attempts, newest first.
    pub async fn list_delivery_attempts(
        &self,
        subscription_id: &str,
        requested_size: i32,
        page_token: &str,
    ) -> Result<AttemptPage, ServiceError> {
        let id = SubscriptionId::parse(subscription_id)?;
        let size = page_size(requested_size, DEFAULT_PAGE, MAX_PAGE);
        let before = if page_token.is_empty() {
            None
        } else {
            Some(page_token.parse::<i64>().map_err(|_| {
                ServiceError::new(
                    ErrorCode::InvalidArgument,
                    "page_token: is not a token this server issued",
                )
            })?)
        };
        let store = &self.inner.store;
        let mut attempts = store
            .subscription_attempts(&id, before, size + 1)
            .await
            .map_err(store_error)?;
        if attempts.is_empty()
            && before.is_none()
            && self
                .inner
                .cache
                .get(&id)
                .await
                .map_err(store_error)?
                .is_none()
        {
            return Err(ServiceError::not_found("subscription", id.as_str()));
        }
        let more = attempts.len() > size as usize;
        attempts.truncate(size as usize);
        let next_page_token = match attempts.last() {
            Some(last) if more => last.cursor.to_string(),
            _ => String::new(),
        };
        Ok(AttemptPage {
            attempts,
            next_page_token,
        })
    }
}
