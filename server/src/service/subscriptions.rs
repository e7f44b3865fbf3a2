//! Subscription management: create, read, list, update (field by field), delete.

use crate::domain::{EventType, SigningSecret, SubscriptionId, TargetUrl, validate_description};
use crate::error::{ErrorCode, ServiceError};
use crate::store::{SubscriptionCursor, SubscriptionRecord, duration_millis, now_millis};

use super::{Service, page_size, store_error};

/// Default and largest page of subscriptions.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 1000;

/// Input of a create.
#[derive(Debug, Clone, Default)]
pub struct NewSubscription {
    /// Where to deliver.
    pub target_url: String,
    /// A secret to sign with (`whsec_…`), or empty.
    pub secret: String,
    /// Generate a secret instead.
    pub generate_secret: bool,
    /// Event types to receive; empty means all.
    pub event_types: Vec<String>,
    /// Free text.
    pub description: String,
}

/// A created subscription, with the secret when the server generated it.
#[derive(Debug, Clone)]
pub struct CreatedSubscription {
    /// The subscription.
    pub subscription: SubscriptionRecord,
    /// The generated secret, shown once.
    pub generated_secret: Option<SigningSecret>,
}

/// The fields an update changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionPatch {
    /// New target.
    pub target_url: Option<String>,
    /// New secret; empty removes signing.
    pub secret: Option<String>,
    /// New event type filter.
    pub event_types: Option<Vec<String>>,
    /// New description.
    pub description: Option<String>,
}

/// One page of subscriptions.
#[derive(Debug, Clone)]
pub struct SubscriptionPage {
    /// The subscriptions, oldest first.
    pub subscriptions: Vec<SubscriptionRecord>,
    /// Where the next page starts; empty at the end.
    pub next_page_token: String,
}

impl Service {
    /// Creates a subscription after validating every field.
    pub async fn create_subscription(
        &self,
        input: NewSubscription,
    ) -> Result<CreatedSubscription, ServiceError> {
        let target_url = self.parse_target_url(&input.target_url)?;
        let event_types = EventType::parse_list("subscription.event_types", &input.event_types)?;
        validate_description("subscription.description", &input.description)?;
        let (secret, generated_secret) = match (input.secret.is_empty(), input.generate_secret) {
            (true, false) => (None, None),
            (true, true) => {
                let secret = SigningSecret::generate();
                (Some(secret.clone()), Some(secret))
            }
            (false, false) => (
                Some(SigningSecret::parse("subscription.secret", &input.secret)?),
                None,
            ),
            (false, true) => {
                return Err(ServiceError::invalid_field(
                    "generate_secret",
                    "cannot be combined with subscription.secret; give a secret or ask for one, not both",
                ));
            }
        };
        let now = now_millis();
        let subscription = SubscriptionRecord {
            id: SubscriptionId::generate(),
            target_url,
            secret,
            previous_secret: None,
            previous_secret_until: None,
            event_types,
            description: input.description,
            created_at: now,
            updated_at: now,
        };
        self.inner
            .store
            .insert_subscription(&subscription)
            .await
            .map_err(store_error)?;
        self.inner.cache.put(subscription.clone()).await;
        tracing::info!(subscription_id = %subscription.id, target_url = subscription.target_url.as_str(), "subscription created");
        Ok(CreatedSubscription {
            subscription,
            generated_secret,
        })
    }

    /// Reads a subscription.
    pub async fn get_subscription(&self, id: &str) -> Result<SubscriptionRecord, ServiceError> {
        let id = SubscriptionId::parse(id)?;
        match self
            .inner
            .store
            .get_subscription(&id)
            .await
            .map_err(store_error)?
        {
            Some(subscription) => Ok(subscription),
            None => Err(ServiceError::not_found("subscription", id.as_str())),
        }
    }

    /// Lists subscriptions, oldest first.
    pub async fn list_subscriptions(
        &self,
        requested_size: i32,
        page_token: &str,
    ) -> Result<SubscriptionPage, ServiceError> {
        let size = page_size(requested_size, DEFAULT_PAGE, MAX_PAGE);
        let after = decode_page_token(page_token)?;
        // One extra row tells whether another page follows.
        let mut subscriptions = self
            .inner
            .store
            .list_subscriptions(after.as_ref(), size + 1)
            .await
            .map_err(store_error)?;
        let more = subscriptions.len() > size as usize;
        subscriptions.truncate(size as usize);
        let next_page_token = match subscriptions.last() {
            Some(last) if more => format!("{}.{}", last.created_at, last.id),
            _ => String::new(),
        };
        Ok(SubscriptionPage {
            subscriptions,
            next_page_token,
        })
    }

    /// Changes the fields a patch names. A new secret keeps the old one signing for the grace period.
    pub async fn update_subscription(
        &self,
        id: &str,
        patch: SubscriptionPatch,
    ) -> Result<SubscriptionRecord, ServiceError> {
        if patch.target_url.is_none()
            && patch.secret.is_none()
            && patch.event_types.is_none()
            && patch.description.is_none()
        {
            return Err(ServiceError::invalid_field(
                "update_mask",
                "must name at least one field to update",
            ));
        }
        let mut subscription = self.get_subscription(id).await?;
        let now = now_millis();
        if let Some(target_url) = &patch.target_url {
            subscription.target_url = self.parse_target_url(target_url)?;
        }
        if let Some(event_types) = &patch.event_types {
            subscription.event_types =
                EventType::parse_list("subscription.event_types", event_types)?;
        }
        if let Some(description) = patch.description {
            validate_description("subscription.description", &description)?;
            subscription.description = description;
        }
        if let Some(secret) = &patch.secret {
            let new_secret = if secret.is_empty() {
                None
            } else {
                Some(SigningSecret::parse("subscription.secret", secret)?)
            };
            if new_secret != subscription.secret {
                // Receivers switch to the new secret at their own pace; until the grace period ends,
                // every delivery carries a signature with each secret.
                subscription.previous_secret = subscription.secret.take();
                subscription.previous_secret_until =
                    Some(now + duration_millis(self.inner.settings.secret_rotation_grace));
                subscription.secret = new_secret;
            }
        }
        subscription.updated_at = now;
        if !self
            .inner
            .store
            .update_subscription(&subscription)
            .await
            .map_err(store_error)?
        {
            return Err(ServiceError::not_found(
                "subscription",
                subscription.id.as_str(),
            ));
        }
        self.inner.cache.put(subscription.clone()).await;
        tracing::info!(subscription_id = %subscription.id, "subscription updated");
        Ok(subscription)
    }

    /// Deletes a subscription; its pending deliveries end as failed.
    pub async fn delete_subscription(&self, id: &str) -> Result<(), ServiceError> {
        let id = SubscriptionId::parse(id)?;
        let cancelled = self
            .inner
            .store
            .delete_subscription(&id)
            .await
            .map_err(store_error)?;
        self.inner.cache.invalidate(&id).await;
        let Some(cancelled) = cancelled else {
            return Err(ServiceError::not_found("subscription", id.as_str()));
        };
        tracing::info!(subscription_id = %id, cancelled_deliveries = cancelled.len(), "subscription deleted");
        self.inner.hub.publish_committed(cancelled);
        Ok(())
    }

    /// Reads a subscription's current secret.
    pub async fn get_subscription_secret(
        &self,
        id: &str,
    ) -> Result<Option<SigningSecret>, ServiceError> {
        Ok(self.get_subscription(id).await?.secret)
    }
}

impl Service {
    /// Parses a target URL and refuses literal internal addresses the policy does not allow. Names are
    /// checked when they are resolved, at delivery time.
    fn parse_target_url(&self, value: &str) -> Result<TargetUrl, ServiceError> {
        let target_url = TargetUrl::parse("subscription.target_url", value)?;
        if let Some(address) = target_url.literal_ip() {
            self.inner
                .settings
                .target_policy
                .check(address)
                .map_err(|refusal| {
                    ServiceError::invalid_field("subscription.target_url", refusal.to_string())
                })?;
        }
        Ok(target_url)
    }
}

fn decode_page_token(token: &str) -> Result<Option<SubscriptionCursor>, ServiceError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        ServiceError::new(
            ErrorCode::InvalidArgument,
            "page_token: is not a token this server issued",
        )
    };
    let (created_at, id) = token.split_once('.').ok_or_else(invalid)?;
    let created_at = created_at.parse::<i64>().map_err(|_| invalid())?;
    Ok(Some(SubscriptionCursor {
        created_at,
        id: id.to_owned(),
    }))
}
