//! Outbound delivery: workers claim tasks and attempt them through one pooled HTTP client.
//!
//! - [`worker`]: the dispatcher loop that feeds attempts from the in-memory hand-off and from due retries.
//! - [`limits`]: the per-subscription in-flight cap, and where a capped subscription's tasks wait.
//! - [`attempt`]: one attempt end to end, from request to recorded result.
//! - [`retry`]: the retry schedule (pure).
//! - [`signer`]: Standard Webhooks signatures.
//! - [`client`]: the shared hyper client.
//! - [`ssrf`]: the address policy and the guarded resolver.

pub mod attempt;
pub mod client;
mod limits;
pub mod retry;
pub mod signer;
pub mod ssrf;
pub mod worker;
