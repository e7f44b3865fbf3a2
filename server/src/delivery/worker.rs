//! The dispatcher: takes tasks and runs their attempts concurrently, at most `max_in_flight` at once.
//!
//! Tasks come from two places:
//! - the in-memory hand-off, fed by ingest right after a commit, for tasks inserted already leased to
//!   this node: the first attempt needs no database read;
//! - claims of due tasks (retries, recovery of expired leases, overflow of the hand-off), made when a
//!   retry is known to come due, when woken, or on the fallback poll tick.
//!
//! A task is only started while its lease still covers a whole attempt plus a margin; one that waited
//! too long is dropped from memory and will be claimed again from the database, so an attempt never
//! runs on a lease that could expire under it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::attempt::{self, AttemptContext};
use crate::cache::SubscriptionCache;
use crate::commit::Committer;
use crate::domain::SubscriptionId;
use crate::store::{ClaimedTask, LeaseRequest, Store, duration_millis, now_millis};

/// Most tasks claimed from the database in one statement.
const CLAIM_BATCH: u32 = 256;

/// How many rounds of its in-flight cap one subscription may park in memory.
const PARKED_ROUNDS: usize = 16;

/// Time a lease must still have left when an attempt starts, beyond the attempt timeout.
const LEASE_MARGIN: Duration = Duration::from_secs(2);

/// Sends freshly committed tasks straight to this node's dispatcher.
#[derive(Debug, Clone)]
pub struct HotQueue {
    sender: mpsc::Sender<ClaimedTask>,
}

impl HotQueue {
    /// Reserves room for one task, or `None` when the dispatcher is saturated; the caller then
    /// queues the task unleased and it is claimed from the database instead.
    pub fn try_reserve(&self) -> Option<mpsc::Permit<'_, ClaimedTask>> {
        self.sender.try_reserve().ok()
    }
}

/// Wakes the dispatcher early: on new due work, and at the earliest retry it knows of.
#[derive(Debug, Default)]
pub struct Wakeup {
    notify: Notify,
    earliest_due: Mutex<Option<Instant>>,
}

impl Wakeup {
    /// Asks the dispatcher to look for due work now.
    pub fn now(&self) {
        self.due_in(Duration::ZERO);
    }

    /// Tells the dispatcher that a task comes due after `delay`.
    pub fn due_in(&self, delay: Duration) {
        let due = Instant::now() + delay;
        let mut earliest = self.lock();
        if earliest.is_none_or(|current| due < current) {
            *earliest = Some(due);
            drop(earliest);
            self.notify.notify_one();
        }
    }

    /// When to look for due work next: the earliest known due time, or `fallback` if sooner.
    fn next(&self, fallback: Instant) -> Instant {
        self.lock().map_or(fallback, |due| due.min(fallback))
    }

    /// Forgets due times that a claim made at `now` has covered.
    fn covered(&self, now: Instant) {
        let mut earliest = self.lock();
        if earliest.is_some_and(|due| due <= now) {
            *earliest = None;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.earliest_due
            .lock()
            .expect("never poisoned: nothing panics while holding it")
    }
}

/// Everything the dispatcher and its attempts share.
#[derive(Debug)]
pub struct Dispatcher {
    store: Arc<dyn Store>,
    cache: SubscriptionCache,
    committer: Committer,
    context: AttemptContext,
    lease: LeaseRequest,
    poll_interval: Duration,
    in_flight: Arc<Semaphore>,
    wakeup: Arc<Wakeup>,
    hot: mpsc::Receiver<ClaimedTask>,
    backlog: VecDeque<ClaimedTask>,
    per_subscription: SubscriptionLimits,
}

/// One attempt's hold on its subscription's in-flight slot, given back when dropped: after the
/// request, or when the attempt is abandoned.
#[derive(Debug)]
struct SubscriptionSlot {
    subscription: Option<SubscriptionId>,
    finished: mpsc::UnboundedSender<SubscriptionId>,
}

impl Drop for SubscriptionSlot {
    fn drop(&mut self) {
        if let Some(subscription) = self.subscription.take() {
            // The dispatcher may have stopped; then nobody needs the slot back.
            let _ = self.finished.send(subscription);
        }
    }
}

/// The per-subscription in-flight cap. A subscription at its cap gets no more attempts until one of
/// its own finishes; its further tasks are parked here instead of taking global slots, so a target
/// that hangs until the attempt timeout cannot take over the whole node.
#[derive(Debug)]
struct SubscriptionLimits {
    cap: usize,
    in_flight: HashMap<SubscriptionId, usize>,
    parked: HashMap<SubscriptionId, VecDeque<ClaimedTask>>,
    parked_total: usize,
    /// Most tasks parked in memory at once; beyond it a task is dropped from memory and claimed
    /// again from the database when its lease expires, so a hung target's backlog costs no memory.
    max_parked: usize,
    /// Attempts report here when they finish, freeing their subscription's slot.
    finished_sender: mpsc::UnboundedSender<SubscriptionId>,
    finished: mpsc::UnboundedReceiver<SubscriptionId>,
}

impl SubscriptionLimits {
    fn new(cap: usize, max_parked: usize) -> Self {
        let (finished_sender, finished) = mpsc::unbounded_channel();
        SubscriptionLimits {
            cap: cap.max(1),
            in_flight: HashMap::new(),
            parked: HashMap::new(),
            parked_total: 0,
            max_parked,
            finished_sender,
            finished,
        }
    }

    /// Takes a slot for the task's subscription, or parks (or drops) the task and returns `None`.
    fn admit(&mut self, task: ClaimedTask) -> Option<ClaimedTask> {
        let running = self
            .in_flight
            .entry(task.subscription_id.clone())
            .or_default();
        if *running < self.cap {
            *running += 1;
            return Some(task);
        }
        // Each subscription may park a few rounds of its cap, so that a hanging target cannot fill the
        // parking space that the others need.
        let queue = self.parked.entry(task.subscription_id.clone()).or_default();
        if self.parked_total < self.max_parked
            && queue.len() < self.cap.saturating_mul(PARKED_ROUNDS)
        {
            self.parked_total += 1;
            queue.push_back(task);
        } else {
            tracing::debug!(delivery_id = %task.delivery_id, "subscription at its in-flight cap; task left for a later claim");
        }
        None
    }

    /// Frees a slot of `subscription`; returns its next parked task, if any.
    fn release(&mut self, subscription: &SubscriptionId) -> Option<ClaimedTask> {
        if let Some(running) = self.in_flight.get_mut(subscription) {
            *running = running.saturating_sub(1);
            if *running == 0 {
                self.in_flight.remove(subscription);
            }
        }
        let queue = self.parked.get_mut(subscription)?;
        let next = queue.pop_front();
        if queue.is_empty() {
            self.parked.remove(subscription);
        }
        if next.is_some() {
            self.parked_total -= 1;
        }
        next
    }
}

/// Settings of the dispatcher.
#[derive(Debug, Clone)]
pub struct DispatcherSettings {
    /// Most attempts at once.
    pub max_in_flight: usize,
    /// Fallback poll interval.
    pub poll_interval: Duration,
    /// Most attempts at once to one subscription.
    pub max_in_flight_per_subscription: usize,
    /// The lease taken on claimed tasks.
    pub lease: LeaseRequest,
}

impl Dispatcher {
    /// A dispatcher and the hand-off queue that feeds it.
    pub fn new(
        store: Arc<dyn Store>,
        cache: SubscriptionCache,
        committer: Committer,
        context: AttemptContext,
        settings: DispatcherSettings,
        wakeup: Arc<Wakeup>,
    ) -> (Self, HotQueue) {
        // The hand-off holds about one round of work; more would only wait in memory.
        let (sender, hot) = mpsc::channel(settings.max_in_flight.max(1));
        let dispatcher = Dispatcher {
            store,
            cache,
            committer,
            context,
            lease: settings.lease,
            poll_interval: settings.poll_interval,
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
            wakeup,
            hot,
            backlog: VecDeque::new(),
            per_subscription: SubscriptionLimits::new(
                settings.max_in_flight_per_subscription,
                settings.max_in_flight.saturating_mul(4),
            ),
        };
        (dispatcher, HotQueue { sender })
    }

    /// Runs until `stop` is cancelled, spawning attempts on `attempts`. Attempts still running when
    /// `abort` is cancelled are abandoned unrecorded; their leases expire and they are retried.
    pub async fn run(
        mut self,
        stop: CancellationToken,
        abort: CancellationToken,
        attempts: TaskTracker,
    ) {
        let mut next_poll = Instant::now();
        loop {
            let permit = tokio::select! {
                () = stop.cancelled() => break,
                Some(subscription) = self.per_subscription.finished.recv() => {
                    self.slot_freed(&subscription);
                    continue;
                }
                permit = self.in_flight.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            if let Some(task) = self.backlog.pop_front() {
                self.start(task, permit, &abort, &attempts);
                continue;
            }
            let wake_at = self.wakeup.next(next_poll);
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                Some(subscription) = self.per_subscription.finished.recv() => {
                    drop(permit);
                    self.slot_freed(&subscription);
                }
                Some(task) = self.hot.recv() => self.start(task, permit, &abort, &attempts),
                // Something changed the next due time: work it out again.
                () = self.wakeup.notify.notified() => drop(permit),
                () = tokio::time::sleep_until(wake_at) => {
                    drop(permit);
                    let claimed_at = Instant::now();
                    let claimed = self.claim().await;
                    self.wakeup.covered(claimed_at);
                    // A full batch means more is due: claim again at once; otherwise rest until the
                    // next tick or wake-up.
                    next_poll = if claimed >= CLAIM_BATCH as usize { Instant::now() } else { Instant::now() + self.poll_interval };
                }
            }
        }
        tracing::debug!(
            waiting = self.backlog.len() + self.hot.len(),
            "dispatcher stopped claiming"
        );
    }

    /// Claims due tasks into the backlog, as many as could start now; returns how many.
    async fn claim(&mut self) -> usize {
        let room = u32::try_from(self.in_flight.available_permits())
            .unwrap_or(u32::MAX)
            .min(CLAIM_BATCH);
        if room == 0 {
            return 0;
        }
        match self.store.claim_due(&self.lease, room).await {
            Ok(tasks) => {
                let claimed = tasks.len();
                self.backlog.extend(tasks);
                claimed
            }
            Err(error) => {
                tracing::warn!(error = %error, cause = ?std::error::Error::source(&error), "claiming due deliveries failed");
                0
            }
        }
    }

    /// An attempt of `subscription` finished: its next parked task, if any, goes first.
    fn slot_freed(&mut self, subscription: &SubscriptionId) {
        if let Some(task) = self.per_subscription.release(subscription) {
            self.backlog.push_front(task);
        }
    }

    fn start(
        &mut self,
        task: ClaimedTask,
        permit: OwnedSemaphorePermit,
        abort: &CancellationToken,
        attempts: &TaskTracker,
    ) {
        let needed = duration_millis(self.context.timeout + LEASE_MARGIN);
        if task.lease_expires_at - now_millis() < needed {
            tracing::debug!(delivery_id = %task.delivery_id, "lease too short to start; left for a later claim");
            return;
        }
        let Some(task) = self.per_subscription.admit(task) else {
            return;
        };
        let slot = SubscriptionSlot {
            subscription: Some(task.subscription_id.clone()),
            finished: self.per_subscription.finished_sender.clone(),
        };
        let cache = self.cache.clone();
        let committer = self.committer.clone();
        let context = self.context.clone();
        let wakeup = self.wakeup.clone();
        let abort = abort.clone();
        attempts.spawn(async move {
            let _permit = permit;
            tokio::select! {
                () = abort.cancelled() => {}
                () = attempt_and_record(&cache, &committer, &context, &wakeup, task, slot) => {}
            }
        });
    }
}

async fn attempt_and_record(
    cache: &SubscriptionCache,
    committer: &Committer,
    context: &AttemptContext,
    wakeup: &Wakeup,
    task: ClaimedTask,
    slot: SubscriptionSlot,
) {
    let subscription = match cache.get(&task.subscription_id).await {
        Ok(subscription) => subscription,
        Err(error) => {
            // Leave the task leased; it is claimed again when the lease expires.
            tracing::warn!(delivery_id = %task.delivery_id, error = %error, "could not read the subscription; attempt postponed");
            return;
        }
    };
    let record = attempt::run(context, &task, subscription.as_deref()).await;
    // The target is done with this request: its subscription's slot is free while the result commits.
    drop(slot);
    let retry_after = record.retry_after;
    tracing::debug!(
        delivery_id = %record.delivery_id,
        attempt = record.attempt_number,
        outcome = ?record.outcome,
        http_status = record.http_status,
        error = record.error.as_deref(),
        "attempt finished"
    );
    match committer.record(record).await {
        Ok(Some(_)) => {
            if let Some(delay) = retry_after {
                wakeup.due_in(delay);
            }
        }
        Ok(None) => {
            tracing::warn!(delivery_id = %task.delivery_id, "attempt result discarded: the lease was taken over")
        }
        Err(error) => {
            tracing::warn!(delivery_id = %task.delivery_id, error = %error, "attempt result not recorded; it will be retried")
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn task(subscription: &SubscriptionId) -> ClaimedTask {
        ClaimedTask {
            delivery_id: crate::domain::DeliveryId::generate(),
            subscription_id: subscription.clone(),
            event_type: None,
            payload: Bytes::from_static(b"{}"),
            attempts_made: 0,
            lease_token: 1,
            lease_expires_at: i64::MAX,
        }
    }

    #[test]
    fn a_subscription_at_its_cap_parks_further_tasks_until_a_slot_frees() {
        let (busy, other) = (SubscriptionId::generate(), SubscriptionId::generate());
        let mut limits = SubscriptionLimits::new(2, 10);

        assert!(limits.admit(task(&busy)).is_some());
        assert!(limits.admit(task(&busy)).is_some());
        let parked = task(&busy);
        let parked_id = parked.delivery_id.clone();
        assert!(
            limits.admit(parked).is_none(),
            "the third task of a capped subscription waits"
        );
        assert!(
            limits.admit(task(&other)).is_some(),
            "other subscriptions are not held up"
        );

        let next = limits
            .release(&busy)
            .expect("the parked task comes back when a slot frees");
        assert_eq!(next.delivery_id, parked_id);
        assert!(limits.release(&busy).is_none());
        assert_eq!(limits.parked_total, 0);
    }

    #[test]
    fn parking_is_bounded_and_overflow_is_left_to_the_database() {
        let busy = SubscriptionId::generate();
        let mut limits = SubscriptionLimits::new(1, 1);
        assert!(limits.admit(task(&busy)).is_some());
        assert!(limits.admit(task(&busy)).is_none());
        assert!(limits.admit(task(&busy)).is_none());
        assert_eq!(
            limits.parked_total, 1,
            "the second overflowing task was dropped, not parked"
        );
    }
}
