//! The subscription cache in front of the store, used on the ingest path and by the workers.
//!
//! Entries (including "no such subscription") live until invalidated or for the TTL, whichever comes
//! first. Writers update the cache right after their commit, so the next ingest or attempt on this node
//! sees the change; the TTL is the safety net for anything that slipped past invalidation.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

use crate::domain::SubscriptionId;
use crate::store::{Store, StoreError, SubscriptionRecord};

/// Most subscriptions kept in memory.
const CAPACITY: u64 = 100_000;

/// Cached subscriptions by id.
#[derive(Debug, Clone)]
pub struct SubscriptionCache {
    entries: Cache<SubscriptionId, Option<Arc<SubscriptionRecord>>>,
    store: Arc<dyn Store>,
}

impl SubscriptionCache {
    /// An empty cache whose entries expire after `ttl`.
    pub fn new(store: Arc<dyn Store>, ttl: Duration) -> Self {
        let entries = Cache::builder()
            .max_capacity(CAPACITY)
            .time_to_live(ttl)
            .build();
        SubscriptionCache { entries, store }
    }

    /// The subscription, from memory when cached. Concurrent misses for one id share one database read.
    pub async fn get(
        &self,
        id: &SubscriptionId,
    ) -> Result<Option<Arc<SubscriptionRecord>>, StoreError> {
        let load = async {
            self.store
                .get_subscription(id)
                .await
                .map(|found| found.map(Arc::new))
        };
        self.entries
            .try_get_with_by_ref(id, load)
            .await
            .map_err(|error: Arc<StoreError>| (*error).clone())
    }

    /// Records a subscription's new state after a committed create or update.
    pub async fn put(&self, subscription: SubscriptionRecord) {
        self.entries
            .insert(subscription.id.clone(), Some(Arc::new(subscription)))
            .await;
    }

    /// Forgets every subscription, e.g. after notifications from other nodes may have been missed.
    pub fn invalidate_all(&self) {
        self.entries.invalidate_all();
    }

    /// Forgets a subscription, e.g. after it was deleted.
    pub async fn invalidate(&self, id: &SubscriptionId) {
        self.entries.invalidate(id).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TargetUrl;
    use crate::store::{OpenOptions, now_millis, sqlite::SqliteStore};

    fn subscription() -> SubscriptionRecord {
        SubscriptionRecord {
            id: SubscriptionId::generate(),
            target_url: TargetUrl::parse("target_url", "https://example.com/hook").unwrap(),
            secret: None,
            previous_secret: None,
            previous_secret_until: None,
            event_types: Vec::new(),
            description: String::new(),
            created_at: now_millis(),
            updated_at: now_millis(),
        }
    }

    #[tokio::test]
    async fn a_warm_cache_serves_lookups_after_the_database_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("whd.db");
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(path.to_str().unwrap(), &OpenOptions::default())
                .await
                .unwrap(),
        );
        let stored = subscription();
        store.insert_subscription(&stored).await.unwrap();
        let cache = SubscriptionCache::new(store.clone(), Duration::from_secs(60));
        let unknown = SubscriptionId::generate();
        assert!(
            cache.get(&stored.id).await.unwrap().is_some(),
            "first lookup reads the database"
        );
        assert!(cache.get(&unknown).await.unwrap().is_none());

        store.close().await;

        let cached = cache
            .get(&stored.id)
            .await
            .expect("served from memory, not the closed database");
        assert_eq!(cached.unwrap().target_url, stored.target_url);
        assert!(
            cache.get(&unknown).await.unwrap().is_none(),
            "a known miss is cached too"
        );
        let error = cache.get(&SubscriptionId::generate()).await.unwrap_err();
        assert!(
            matches!(error, StoreError::Unavailable(_)),
            "a cold lookup does need the database: {error:?}"
        );
    }

    #[tokio::test]
    async fn invalidation_makes_the_next_lookup_read_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(
                dir.path().join("whd.db").to_str().unwrap(),
                &OpenOptions::default(),
            )
            .await
            .unwrap(),
        );
        let stored = subscription();
        store.insert_subscription(&stored).await.unwrap();
        let cache = SubscriptionCache::new(store.clone(), Duration::from_secs(60));
        assert!(cache.get(&stored.id).await.unwrap().is_some());

        store.delete_subscription(&stored.id).await.unwrap();
        assert!(
            cache.get(&stored.id).await.unwrap().is_some(),
            "still cached until invalidated"
        );
        cache.invalidate(&stored.id).await;

        assert!(cache.get(&stored.id).await.unwrap().is_none());
    }
}
