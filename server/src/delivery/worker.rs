//! The dispatcher: takes tasks and runs their attempts concurrently, at most `max_in_flight` at once.
//!
//! Tasks come from two places:
//! - the in-memory hand-off, fed by ingest right after a commit, for tasks inserted already leased to
//!   this node: the first attempt needs no database read;
//! - claims of due tasks (retries, recovery of expired leases, overflow of the hand-off, postponed
//!   tasks, and webhooks that ingest queued at the end of a busy subscription's line), made when
//!   such a task is known to come due, when woken, or on the fallback poll tick.
//!
//! A task is only started while its lease still covers a whole attempt plus a margin; one that waited
//! too long is handed back to the database, due at once, and claimed again with a fresh lease, so an
//! attempt never runs on a lease that could expire under it. Tasks of a subscription at its in-flight
//! cap wait as [`super::limits`] decides.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::attempt::{self, AttemptContext};
use super::limits::{
    Admission, Lines, MAX_PARKED_BYTES, PARKED_PER_SLOT, SubscriptionLimits, SubscriptionSlot,
};
use crate::cache::SubscriptionCache;
use crate::commit::Committer;
use crate::domain::SubscriptionId;
use crate::store::{ClaimedTask, LeaseRequest, Postponement, Store, duration_millis, now_millis};

/// Most tasks claimed from the database in one statement.
const CLAIM_BATCH: u32 = 256;

/// Time a lease must still have left when an attempt starts, beyond the attempt timeout.
const LEASE_MARGIN: Duration = Duration::from_secs(2);

/// Sends freshly committed tasks straight to this node's dispatcher.
#[derive(Debug, Clone)]
pub struct HotQueue {
    sender: mpsc::Sender<ClaimedTask>,
    lines: Arc<Lines>,
}

impl HotQueue {
    /// Reserves room for one task, or `None` when the dispatcher is saturated; the caller then
    /// queues the task unleased and it is claimed from the database instead.
    pub fn try_reserve(&self) -> Option<mpsc::Permit<'_, ClaimedTask>> {
        self.sender.try_reserve().ok()
    }

    /// When `subscription` is so far behind its in-flight cap that the dispatcher would only
    /// postpone a task handed to it, the delay to queue a new webhook with instead: the end of its
    /// line.
    pub fn line_delay(&self, subscription: &SubscriptionId) -> Option<Duration> {
        self.lines.join_if_open(subscription, Instant::now())
    }
}

/// Most due times the dispatcher is told of that it keeps; beyond them, the fallback poll finds the
/// work.
const MAX_KNOWN_DUE_TIMES: usize = 16_384;

/// Due times closer together than this are looked for in one claim, made at the later one.
const DUE_TIME_GRAIN: Duration = Duration::from_millis(1);

/// Wakes the dispatcher early: on new due work, and whenever a retry or postponed task it knows of
/// comes due.
#[derive(Debug, Default)]
pub struct Wakeup {
    notify: Notify,
    due_times: Mutex<BTreeSet<Instant>>,
}

impl Wakeup {
    /// Asks the dispatcher to look for due work now.
    pub fn now(&self) {
        self.due_in(Duration::ZERO);
    }

    /// Tells the dispatcher that a task comes due after `delay`.
    pub fn due_in(&self, delay: Duration) {
        let due = Instant::now() + delay;
        let mut due_times = self.lock();
        // A claim already planned for a moment just after this one finds this task too; one planned
        // just before it is made at this moment instead.
        if due_times.range(due..=due + DUE_TIME_GRAIN).next().is_some() {
            return;
        }
        let grain_before = due.checked_sub(DUE_TIME_GRAIN).unwrap_or(due);
        while let Some(&earlier) = due_times.range(grain_before..due).next() {
            due_times.remove(&earlier);
        }
        due_times.insert(due);
        if due_times.len() > MAX_KNOWN_DUE_TIMES {
            due_times.pop_last();
        }
        let earliest = due_times.first() == Some(&due);
        drop(due_times);
        if earliest {
            self.notify.notify_one();
        }
    }

    /// When to look for due work next: the earliest known due time, or `fallback` if sooner.
    fn next(&self, fallback: Instant) -> Instant {
        self.lock()
            .first()
            .map_or(fallback, |due| (*due).min(fallback))
    }

    /// Forgets due times that a claim made at `now` has covered.
    fn covered(&self, now: Instant) {
        let mut due_times = self.lock();
        let later = due_times.split_off(&now);
        *due_times = later;
        due_times.remove(&now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<Instant>> {
        self.due_times
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
                settings.max_in_flight.saturating_mul(PARKED_PER_SLOT),
                MAX_PARKED_BYTES,
            ),
        };
        let lines = dispatcher.per_subscription.lines();
        (dispatcher, HotQueue { sender, lines })
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
                Some((subscription, took)) = self.per_subscription.finished.recv() => {
                    self.slot_freed(&subscription, took);
                    continue;
                }
                permit = self.in_flight.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            if let Some(task) = self.backlog.pop_front() {
                self.start(task, false, permit, &abort, &attempts);
                continue;
            }
            let wake_at = self.wakeup.next(next_poll);
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                Some((subscription, took)) = self.per_subscription.finished.recv() => {
                    drop(permit);
                    self.slot_freed(&subscription, took);
                }
                Some(task) = self.hot.recv() => self.start(task, true, permit, &abort, &attempts),
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

    /// An attempt of `subscription` that took `took` finished: its next parked task, if any, goes
    /// first.
    fn slot_freed(&mut self, subscription: &SubscriptionId, took: Duration) {
        if let Some(task) = self
            .per_subscription
            .release(subscription, took, Instant::now())
        {
            self.backlog.push_front(task);
        }
    }

    /// Starts `task` if its subscription has a free slot, or lets it wait; `fresh` when it comes
    /// straight from ingest.
    fn start(
        &mut self,
        task: ClaimedTask,
        fresh: bool,
        permit: OwnedSemaphorePermit,
        abort: &CancellationToken,
        attempts: &TaskTracker,
    ) {
        let needed = duration_millis(self.context.timeout + LEASE_MARGIN);
        let may_wait = task.lease_expires_at - now_millis() - needed;
        let Ok(may_wait) = u64::try_from(may_wait) else {
            tracing::debug!(delivery_id = %task.delivery_id, "lease too short to start; handed back for a fresh claim");
            let subscription = task.subscription_id.clone();
            self.postpone(task, Duration::ZERO, attempts);
            // Had a freed slot gone to it, the slot now goes to the next task parked for it.
            if let Some(next) = self.per_subscription.next_for_free_slot(&subscription) {
                self.backlog.push_front(next);
            }
            return;
        };
        let task = match self.per_subscription.admit(
            task,
            fresh,
            Instant::now(),
            Duration::from_millis(may_wait),
        ) {
            Admission::Start(task) => task,
            Admission::Parked => return,
            Admission::Postpone(task, delay) => {
                tracing::debug!(delivery_id = %task.delivery_id, ?delay, "subscription at its in-flight cap; task postponed");
                self.postpone(task, delay, attempts);
                return;
            }
        };
        let slot = self.per_subscription.slot(task.subscription_id.clone());
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
    /// Hands `task` back to the database, due after `delay`, and looks for due work again then. Should
    /// that fail, the task waits for its lease to expire instead.
    fn postpone(&self, task: ClaimedTask, delay: Duration, attempts: &TaskTracker) {
        let committer = self.committer.clone();
        let wakeup = self.wakeup.clone();
        attempts.spawn(async move {
            let postponement = Postponement {
                delivery_id: task.delivery_id,
                lease_token: task.lease_token,
                delay,
            };
            match committer.postpone(postponement).await {
                Ok(()) => wakeup.due_in(delay),
                Err(error) => {
                    tracing::warn!(error = %error, "could not postpone a task; it is claimed again when its lease expires")
                }
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
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_dispatcher_is_woken_at_every_due_time_it_was_told_of_not_only_the_earliest() {
        let wakeup = Wakeup::default();
        let start = Instant::now();
        let fallback = start + Duration::from_secs(1);
        wakeup.due_in(Duration::from_millis(30));
        wakeup.due_in(Duration::from_millis(10));
        wakeup.due_in(Duration::from_millis(20));
        wakeup.due_in(Duration::from_micros(20_500));

        let mut claims = Vec::new();
        for _ in 0..3 {
            let at = wakeup.next(fallback);
            tokio::time::sleep_until(at).await;
            claims.push(at - start);
            wakeup.covered(Instant::now());
        }
        assert_eq!(
            claims,
            [10_000, 20_500, 30_000].map(Duration::from_micros),
            "one claim per due time; the two within a millisecond share the later one"
        );
        assert_eq!(wakeup.next(fallback), fallback);
    }
}
