//! The per-subscription in-flight cap. A subscription at its cap gets no more attempts until one of its
//! own finishes, so a target that hangs until the attempt timeout cannot take over the whole node.
//!
//! Its further tasks wait in one of two places:
//! - parked in memory, many rounds of its cap (bounded in count and in bytes), when they can start
//!   before their leases run short;
//! - back in the database, postponed to when a slot is expected to be free, when they cannot: a hung
//!   target's backlog then costs no memory, and an overloaded fast one does not leave tasks leased
//!   and idle until their leases expire.
//!
//! The parking space is large on purpose. A task that waits in memory costs nothing; one that goes
//! through the database costs two more writes (its postponement and its claim), and when a busy
//! subscription's bursts overflowed a small space (16 rounds of its cap, a few tens of milliseconds
//! at full rate), those writes took so much of the machine that the subscription delivered less than
//! half as fast, its tasks overflowed all the more, and it stayed that way until the burst ended
//! (measured with `whctl bench -n 200000 -c 256`: most runs fell from about 20,000 to
//! 7,000–10,000 deliveries per second, with latencies of seconds). Fresh tasks are not sent behind
//! the postponed ones while there is room, for the same reason, and a part of the space is kept for
//! tasks coming back from the database, so that newer tasks do not push them back again.
//!
//! When a slot is expected to free comes from how fast the subscription's slots have been freeing
//! while tasks waited for them, or from how long its attempts take where that is slower. Postponed
//! tasks are spaced one slot apart, so they come back about as fast as the subscription takes them.
//!
//! Once a fresh task finds the parking space full, the subscription's line in the database is
//! *open* to ingest ([`Lines`]): its new webhooks are queued unleased at the end of the line straight
//! away instead of being handed over only to be postponed, which saves a write per webhook for as
//! long as the subscription stays that far behind. The line closes when the parked tasks have gone
//! down by half.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::domain::SubscriptionId;
use crate::store::ClaimedTask;

/// How many rounds of its in-flight cap one subscription may park in memory.
const PARKED_ROUNDS: usize = 128;

/// How many tasks may be parked in memory per global in-flight slot, over all subscriptions.
pub(super) const PARKED_PER_SLOT: usize = 16;

/// Most payload bytes parked in memory at once, over all subscriptions.
pub(super) const MAX_PARKED_BYTES: usize = 32 << 20;

/// Longest a task is postponed for. Further ahead the estimate is too uncertain to wait for (a hung
/// target may recover); a task further back in line is claimed again then, and postponed again if its
/// subscription is still as far behind.
pub(super) const MAX_POSTPONEMENT: Duration = Duration::from_secs(300);

/// Weight of the latest attempt in a subscription's running mean attempt time.
const LATEST_ATTEMPT_WEIGHT: f64 = 0.125;

/// Weight of the latest gap between two of a saturated subscription's slots freeing in its running
/// mean: gaps come in bursts, so the mean spans about a round of a typical cap.
const LATEST_GAP_WEIGHT: f64 = 1.0 / 64.0;

/// What becomes of a task when it is its turn to start.
#[derive(Debug)]
pub(super) enum Admission {
    /// It has a slot of its subscription's: start it now.
    Start(ClaimedTask),
    /// It waits in memory for a slot.
    Parked,
    /// Its subscription will not have a slot for it while its lease lasts, or there is no room to
    /// park it: hand it back to the database, due after this delay, when a slot is expected to be
    /// free.
    Postpone(ClaimedTask, Duration),
}

/// What a busy subscription has running and waiting.
#[derive(Debug)]
struct Load {
    running: usize,
    parked: VecDeque<ClaimedTask>,
    /// When it last went from idle to busy.
    busy_since: Instant,
    /// Running mean of how long its attempts take, once one has finished.
    attempt_time: Option<Duration>,
    /// Running mean of the time between two of its slots freeing while tasks were waiting for them,
    /// once measured: how fast it really takes tasks, with the time a freed slot takes to be reused.
    release_gap: Option<Duration>,
    /// When a slot last freed with tasks waiting for it.
    saturated_release: Option<Instant>,
    /// Whether it has a line in [`Lines`], kept here so that an idle subscription is dropped without
    /// taking their lock.
    has_line: bool,
    /// While its line is open to ingest, how many tasks were parked when it opened.
    open_with_parked: Option<usize>,
}

impl Load {
    fn idle(now: Instant) -> Self {
        Load {
            running: 0,
            parked: VecDeque::new(),
            busy_since: now,
            attempt_time: None,
            release_gap: None,
            saturated_release: None,
            has_line: false,
            open_with_parked: None,
        }
    }

    /// Expected time between two of its slots freeing while all of them are taken. Attempts alone
    /// would free one every `attempt_time / cap`, but a freed slot takes a moment to be reused, which
    /// under full load is not small; where gaps have been measured, the longer of the two counts, so
    /// that postponed tasks do not come back faster than the subscription takes them.
    fn slot_interval(&self, now: Instant, cap: usize) -> Duration {
        // Until an attempt finishes, the running ones have taken at least as long as it has been busy.
        let attempt_time = self
            .attempt_time
            .unwrap_or_else(|| now.saturating_duration_since(self.busy_since));
        let by_attempts = attempt_time / u32::try_from(cap).unwrap_or(u32::MAX);
        self.release_gap
            .map_or(by_attempts, |gap| gap.max(by_attempts))
    }

    /// A slot freed at `now`; `waiting` when tasks were parked for it.
    fn record_release(&mut self, now: Instant, waiting: bool) {
        if let (true, Some(previous)) = (waiting, self.saturated_release) {
            let gap = now.saturating_duration_since(previous);
            self.release_gap = Some(running_mean(self.release_gap, gap, LATEST_GAP_WEIGHT));
        }
        self.saturated_release = waiting.then_some(now);
    }

    fn record_attempt_time(&mut self, took: Duration) {
        self.attempt_time = Some(running_mean(self.attempt_time, took, LATEST_ATTEMPT_WEIGHT));
    }
}

/// The lines of postponed tasks in the database, one per busy subscription: when the task that joined
/// last is expected to get a slot. Shared with ingest, which queues a subscription's new webhooks at
/// the end of its line while the line is open.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    /// How many lines are open, so that ingest skips the lock while none is.
    open: AtomicUsize,
    by_subscription: Mutex<HashMap<SubscriptionId, Line>>,
}

#[derive(Debug)]
struct Line {
    ends: Instant,
    /// The subscription's expected time between two free slots.
    interval: Duration,
    open: bool,
}

impl Line {
    /// A task joins at `now`: due at its `turn` and a slot after the task that joined before it, at
    /// most [`MAX_POSTPONEMENT`] ahead; returns the delay until then.
    fn append(&mut self, now: Instant, turn: Instant) -> Duration {
        let due = if self.ends > now {
            turn.max(self.ends + self.interval)
        } else {
            turn
        }
        .min(now + MAX_POSTPONEMENT);
        self.ends = due;
        due - now
    }
}

impl Lines {
    /// A task of `subscription`, whose slots free every `interval`, joins its line at `now`
    /// ([`Line::append`]).
    fn join(
        &self,
        subscription: &SubscriptionId,
        now: Instant,
        turn: Instant,
        interval: Duration,
    ) -> Duration {
        let mut lines = self.lock();
        let line = lines.entry(subscription.clone()).or_insert(Line {
            ends: now,
            interval,
            open: false,
        });
        line.interval = interval;
        line.append(now, turn)
    }

    /// For ingest: if `subscription`'s line is open and not yet over at `now`, a new webhook joins its
    /// end; returns the delay until its turn.
    pub(crate) fn join_if_open(
        &self,
        subscription: &SubscriptionId,
        now: Instant,
    ) -> Option<Duration> {
        if self.open.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut lines = self.lock();
        let line = lines.get_mut(subscription).filter(|line| line.open)?;
        if line.ends <= now {
            // Everything in line has come due; the dispatcher decides afresh.
            return None;
        }
        Some(line.append(now, now))
    }

    fn set_open(&self, subscription: &SubscriptionId, open: bool) {
        if let Some(line) = self.lock().get_mut(subscription)
            && line.open != open
        {
            line.open = open;
            if open {
                self.open.fetch_add(1, Ordering::Relaxed);
            } else {
                self.open.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn forget(&self, subscription: &SubscriptionId) {
        if let Some(line) = self.lock().remove(subscription)
            && line.open
        {
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SubscriptionId, Line>> {
        self.by_subscription
            .lock()
            .expect("never poisoned: nothing panics while holding it")
    }
}

/// `mean` moved towards `latest` by `weight`; the first value is its own mean.
fn running_mean(mean: Option<Duration>, latest: Duration, weight: f64) -> Duration {
    mean.map_or(latest, |mean| {
        mean.mul_f64(1.0 - weight) + latest.mul_f64(weight)
    })
}

/// The cap, with each busy subscription's load.
#[derive(Debug)]
pub(super) struct SubscriptionLimits {
    cap: usize,
    loads: HashMap<SubscriptionId, Load>,
    parked_total: usize,
    parked_bytes: usize,
    /// Most tasks parked in memory at once, over all subscriptions.
    max_parked: usize,
    /// Most payload bytes parked at once, over all subscriptions.
    max_parked_bytes: usize,
    lines: Arc<Lines>,
    /// Attempts report here when they finish, with how long they took, freeing their slot.
    finished_sender: mpsc::UnboundedSender<(SubscriptionId, Duration)>,
    pub(super) finished: mpsc::UnboundedReceiver<(SubscriptionId, Duration)>,
}

impl SubscriptionLimits {
    pub(super) fn new(cap: usize, max_parked: usize, max_parked_bytes: usize) -> Self {
        let (finished_sender, finished) = mpsc::unbounded_channel();
        SubscriptionLimits {
            cap: cap.max(1),
            loads: HashMap::new(),
            parked_total: 0,
            parked_bytes: 0,
            max_parked,
            max_parked_bytes,
            lines: Arc::default(),
            finished_sender,
            finished,
        }
    }

    /// The subscriptions' lines in the database, for ingest.
    pub(super) fn lines(&self) -> Arc<Lines> {
        Arc::clone(&self.lines)
    }

    /// The slot an attempt of `subscription` holds from now until it is dropped.
    pub(super) fn slot(&self, subscription: SubscriptionId) -> SubscriptionSlot {
        SubscriptionSlot {
            subscription: Some(subscription),
            started: Instant::now(),
            finished: self.finished_sender.clone(),
        }
    }

    /// Decides what becomes of `task` at `now`, when it may wait at most `may_wait` before starting.
    /// A `fresh` task has just been queued; any other was in line already (claimed when due, or
    /// parked).
    pub(super) fn admit(
        &mut self,
        task: ClaimedTask,
        fresh: bool,
        now: Instant,
        may_wait: Duration,
    ) -> Admission {
        let load = self
            .loads
            .entry(task.subscription_id.clone())
            .or_insert_with(|| Load::idle(now));
        if load.running < self.cap {
            load.running += 1;
            return Admission::Start(task);
        }
        let interval = load.slot_interval(now, self.cap);
        let turn =
            now + interval.saturating_mul(u32::try_from(load.parked.len() + 1).unwrap_or(u32::MAX));
        // Rounds per subscription, so that a hung target cannot fill the space the others need, and a
        // quarter more for tasks that come back from the database when it is their turn, so that they
        // find room instead of being postponed again behind newer ones.
        let allowed = |limit: usize| {
            if fresh {
                limit
            } else {
                limit.saturating_add(limit / 4)
            }
        };
        let bytes = task.payload.len();
        let has_room = load.parked.len() < allowed(self.cap.saturating_mul(PARKED_ROUNDS))
            && self.parked_total < allowed(self.max_parked)
            && self.parked_bytes + bytes <= allowed(self.max_parked_bytes);
        if has_room && turn - now < may_wait {
            self.parked_total += 1;
            self.parked_bytes += bytes;
            load.parked.push_back(task);
            return Admission::Parked;
        }
        let delay = self.lines.join(&task.subscription_id, now, turn, interval);
        load.has_line = true;
        if fresh && !has_room && load.open_with_parked.is_none() {
            load.open_with_parked = Some(load.parked.len());
            self.lines.set_open(&task.subscription_id, true);
        }
        Admission::Postpone(task, delay)
    }

    /// An attempt of `subscription` that took `took` gave its slot back at `now`; returns the
    /// subscription's next parked task, if any, which is then next to start.
    pub(super) fn release(
        &mut self,
        subscription: &SubscriptionId,
        took: Duration,
        now: Instant,
    ) -> Option<ClaimedTask> {
        let load = self.loads.get_mut(subscription)?;
        load.running = load.running.saturating_sub(1);
        load.record_attempt_time(took);
        load.record_release(now, !load.parked.is_empty());
        self.next_for_free_slot(subscription)
    }

    /// The next parked task of `subscription` if one of its slots is free: when a slot is freed, or
    /// when the task a freed slot went to could not start after all (its lease ran short while
    /// parked). An idle subscription's state is dropped.
    pub(super) fn next_for_free_slot(
        &mut self,
        subscription: &SubscriptionId,
    ) -> Option<ClaimedTask> {
        let load = self.loads.get_mut(subscription)?;
        if load.running >= self.cap {
            return None;
        }
        let next = load.parked.pop_front();
        if let Some(task) = &next {
            self.parked_total -= 1;
            self.parked_bytes -= task.payload.len();
            if load
                .open_with_parked
                .is_some_and(|opened_with| load.parked.len() <= opened_with / 2)
            {
                load.open_with_parked = None;
                self.lines.set_open(subscription, false);
            }
        } else if load.running == 0 {
            if load.has_line {
                self.lines.forget(subscription);
            }
            self.loads.remove(subscription);
        }
        next
    }
}

/// One attempt's hold on its subscription's in-flight slot, given back when dropped: after the
/// request, or when the attempt is abandoned.
#[derive(Debug)]
pub(super) struct SubscriptionSlot {
    subscription: Option<SubscriptionId>,
    started: Instant,
    finished: mpsc::UnboundedSender<(SubscriptionId, Duration)>,
}

impl Drop for SubscriptionSlot {
    fn drop(&mut self) {
        if let Some(subscription) = self.subscription.take() {
            // The dispatcher may have stopped; then nobody needs the slot back.
            let _ = self.finished.send((subscription, self.started.elapsed()));
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    const LONG_LEASE: Duration = Duration::from_secs(3600);

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

    fn started(admission: Admission) -> bool {
        matches!(admission, Admission::Start(_))
    }

    fn parked(admission: Admission) -> bool {
        matches!(admission, Admission::Parked)
    }

    fn postponed_by(admission: Admission) -> Duration {
        match admission {
            Admission::Postpone(_, delay) => delay,
            other => panic!("expected a postponement, got {other:?}"),
        }
    }

    /// Fills `subscription`'s two slots and reports attempts of `attempt_time`, so that its pace is
    /// known: with both slots taken, one frees every `attempt_time / 2`.
    fn busy_at_pace(
        limits: &mut SubscriptionLimits,
        subscription: &SubscriptionId,
        now: Instant,
        attempt_time: Duration,
    ) {
        for _ in 0..2 {
            assert!(started(limits.admit(
                task(subscription),
                true,
                now,
                LONG_LEASE
            )));
        }
        for _ in 0..2 {
            assert!(limits.release(subscription, attempt_time, now).is_none());
            assert!(started(limits.admit(
                task(subscription),
                true,
                now,
                LONG_LEASE
            )));
        }
    }

    #[test]
    fn a_subscription_at_its_cap_parks_further_tasks_until_a_slot_frees() {
        let (busy, other) = (SubscriptionId::generate(), SubscriptionId::generate());
        let mut limits = SubscriptionLimits::new(2, 10, usize::MAX);
        let now = Instant::now();

        assert!(started(limits.admit(task(&busy), true, now, LONG_LEASE)));
        assert!(started(limits.admit(task(&busy), true, now, LONG_LEASE)));
        let waiting = task(&busy);
        let waiting_id = waiting.delivery_id.clone();
        assert!(
            parked(limits.admit(waiting, true, now, LONG_LEASE)),
            "the third task of a capped subscription waits"
        );
        assert!(
            started(limits.admit(task(&other), true, now, LONG_LEASE)),
            "other subscriptions are not held up"
        );

        let next = limits
            .release(&busy, Duration::from_millis(5), now)
            .expect("the parked task comes back when a slot frees");
        assert_eq!(next.delivery_id, waiting_id);
        assert!(
            limits
                .release(&busy, Duration::from_millis(5), now)
                .is_none()
        );
        assert_eq!(limits.parked_total, 0);
    }

    #[test]
    fn a_slot_whose_parked_task_could_not_start_goes_to_the_next_parked_task() {
        let busy = SubscriptionId::generate();
        let mut limits = SubscriptionLimits::new(1, 10, usize::MAX);
        let now = Instant::now();
        assert!(started(limits.admit(task(&busy), true, now, LONG_LEASE)));
        let (stale, next) = (task(&busy), task(&busy));
        let next_id = next.delivery_id.clone();
        assert!(parked(limits.admit(stale, true, now, LONG_LEASE)));
        assert!(parked(limits.admit(next, true, now, LONG_LEASE)));

        assert!(
            limits
                .release(&busy, Duration::from_millis(5), now)
                .is_some()
        );
        // The released task's lease ran short: it is handed back without taking the slot.
        let taken = limits
            .next_for_free_slot(&busy)
            .expect("the free slot goes to the next parked task");
        assert_eq!(taken.delivery_id, next_id);
        assert!(limits.next_for_free_slot(&busy).is_none());
        assert!(
            limits.loads.is_empty(),
            "an idle subscription keeps no state"
        );
    }

    #[test]
    fn beyond_the_parking_space_tasks_are_postponed_one_slot_apart() {
        let busy = SubscriptionId::generate();
        let mut limits = SubscriptionLimits::new(2, 3, usize::MAX);
        let now = Instant::now();
        busy_at_pace(&mut limits, &busy, now, Duration::from_millis(100));
        for _ in 0..3 {
            assert!(parked(limits.admit(task(&busy), false, now, LONG_LEASE)));
        }

        // Three parked ahead, a slot every 50 ms: the first postponed task's turn is in 200 ms, and
        // each next one a slot later.
        let delays: Vec<Duration> = (0..3)
            .map(|_| postponed_by(limits.admit(task(&busy), false, now, LONG_LEASE)))
            .collect();
        assert_eq!(
            delays,
            [200, 250, 300].map(Duration::from_millis),
            "postponed tasks come back as fast as the subscription takes them"
        );
    }

    #[test]
    fn once_fresh_tasks_overflow_the_parking_space_ingest_joins_the_line_until_the_parked_halve() {
        let (busy, other) = (SubscriptionId::generate(), SubscriptionId::generate());
        let mut limits = SubscriptionLimits::new(2, 4, usize::MAX);
        let lines = limits.lines();
        let now = Instant::now();
        let ms = Duration::from_millis;
        busy_at_pace(&mut limits, &busy, now, ms(100));
        for _ in 0..4 {
            assert!(parked(limits.admit(task(&busy), true, now, LONG_LEASE)));
        }
        assert_eq!(
            lines.join_if_open(&busy, now),
            None,
            "while fresh tasks find room, ingest hands them over"
        );

        // Four parked ahead, a slot every 50 ms: the fifth fresh task's turn is in 250 ms.
        assert_eq!(
            postponed_by(limits.admit(task(&busy), true, now, LONG_LEASE)),
            ms(250)
        );
        assert_eq!(
            [(); 2].map(|()| lines.join_if_open(&busy, now)),
            [Some(ms(300)), Some(ms(350))],
            "ingest now queues new webhooks at the end of the line, a slot apart"
        );
        assert_eq!(
            lines.join_if_open(&other, now),
            None,
            "other subscriptions are handed over as before"
        );
        assert_eq!(
            postponed_by(limits.admit(task(&busy), true, now, LONG_LEASE)),
            ms(400),
            "the dispatcher's own postponements join the same line"
        );

        assert!(limits.release(&busy, ms(100), now).is_some());
        assert!(
            lines.join_if_open(&busy, now).is_some(),
            "three of four still parked"
        );
        assert!(limits.release(&busy, ms(100), now).is_some());
        assert_eq!(
            lines.join_if_open(&busy, now),
            None,
            "half the parked tasks have started: new ones are handed over again"
        );
    }

    #[test]
    fn a_task_that_would_wait_longer_than_its_lease_allows_is_postponed_instead_of_parked() {
        let slow = SubscriptionId::generate();
        let mut limits = SubscriptionLimits::new(2, 100, usize::MAX);
        let now = Instant::now();
        // A target that hangs until a 10 s timeout frees a slot every 5 s.
        busy_at_pace(&mut limits, &slow, now, Duration::from_secs(10));
        let may_wait = Duration::from_secs(12);
        assert!(parked(limits.admit(task(&slow), false, now, may_wait)));
        assert!(parked(limits.admit(task(&slow), false, now, may_wait)));
        assert_eq!(
            postponed_by(limits.admit(task(&slow), false, now, may_wait)),
            Duration::from_secs(15),
            "the third would start after 15 s, when its lease no longer covers an attempt"
        );
    }

    #[test]
    fn overflowing_fresh_tasks_go_to_the_end_of_the_line_and_room_is_kept_for_the_line() {
        let busy = SubscriptionId::generate();
        let mut limits = SubscriptionLimits::new(2, 4, usize::MAX);
        let now = Instant::now();
        busy_at_pace(&mut limits, &busy, now, Duration::from_millis(100));
        for _ in 0..4 {
            assert!(parked(limits.admit(task(&busy), true, now, LONG_LEASE)));
        }

        // Four parked ahead, a slot every 50 ms.
        assert_eq!(
            postponed_by(limits.admit(task(&busy), true, now, LONG_LEASE)),
            Duration::from_millis(250)
        );
        assert_eq!(
            postponed_by(limits.admit(task(&busy), true, now, LONG_LEASE)),
            Duration::from_millis(300),
            "behind the one postponed before it, a slot later"
        );
        assert!(
            parked(limits.admit(task(&busy), false, now, LONG_LEASE)),
            "a task back from the database finds the room kept for it"
        );
    }

    #[test]
    fn parked_payloads_are_bounded_in_bytes_as_well_as_in_number() {
        let busy = SubscriptionId::generate();
        let mut limits = SubscriptionLimits::new(2, 100, 10);
        let now = Instant::now();
        busy_at_pace(&mut limits, &busy, now, Duration::from_millis(100));
        let with_payload = |bytes: &'static [u8]| ClaimedTask {
            payload: Bytes::from_static(bytes),
            ..task(&busy)
        };
        assert!(parked(limits.admit(
            with_payload(b"12345678"),
            true,
            now,
            LONG_LEASE
        )));
        assert!(
            matches!(
                limits.admit(with_payload(b"123"), true, now, LONG_LEASE),
                Admission::Postpone(..)
            ),
            "eleven bytes would not fit in ten"
        );
        assert!(parked(limits.admit(
            with_payload(b"12"),
            true,
            now,
            LONG_LEASE
        )));
        let next = limits
            .release(&busy, Duration::from_millis(100), now)
            .expect("the first parked task takes the freed slot");
        assert!(started(limits.admit(next, false, now, LONG_LEASE)));
        assert!(
            parked(limits.admit(with_payload(b"12345678"), true, now, LONG_LEASE)),
            "a started task's bytes are given back"
        );
    }

    #[test]
    fn postponed_tasks_are_spaced_by_how_fast_slots_really_free_when_that_is_slower_than_attempts()
    {
        let busy = SubscriptionId::generate();
        let mut limits = SubscriptionLimits::new(2, 1, usize::MAX);
        let mut now = Instant::now();
        // Attempts of 100 ms on two slots would free one every 50 ms ...
        busy_at_pace(&mut limits, &busy, now, Duration::from_millis(100));
        assert!(parked(limits.admit(task(&busy), false, now, LONG_LEASE)));
        // ... but under load each freed slot is reused only 200 ms after the one before.
        for _ in 0..200 {
            now += Duration::from_millis(200);
            let next = limits
                .release(&busy, Duration::from_millis(100), now)
                .expect("the parked task takes the freed slot");
            assert!(started(limits.admit(next, false, now, LONG_LEASE)));
            assert!(parked(limits.admit(task(&busy), false, now, LONG_LEASE)));
        }
        let delay = postponed_by(limits.admit(task(&busy), false, now, LONG_LEASE));
        assert!(
            delay > Duration::from_millis(350) && delay <= Duration::from_millis(400),
            "one parked ahead, a slot every 200 ms: about 400 ms, got {delay:?}"
        );
    }

    #[test]
    fn postponements_are_bounded_however_far_behind_a_subscription_is() {
        let hung = SubscriptionId::generate();
        let mut limits = SubscriptionLimits::new(2, 0, usize::MAX);
        let now = Instant::now();
        busy_at_pace(&mut limits, &hung, now, Duration::from_secs(3600));
        for _ in 0..3 {
            assert_eq!(
                postponed_by(limits.admit(task(&hung), false, now, LONG_LEASE)),
                MAX_POSTPONEMENT
            );
        }
    }

    #[test]
    fn until_an_attempt_finishes_the_pace_is_judged_by_how_long_the_running_ones_have_taken() {
        let new = SubscriptionId::generate();
        let mut limits = SubscriptionLimits::new(2, 0, usize::MAX);
        let now = Instant::now();
        assert!(started(limits.admit(task(&new), true, now, LONG_LEASE)));
        assert!(started(limits.admit(task(&new), true, now, LONG_LEASE)));
        let later = now + Duration::from_secs(4);
        assert_eq!(
            postponed_by(limits.admit(task(&new), false, later, LONG_LEASE)),
            Duration::from_secs(2),
            "both attempts have run for 4 s and not finished: a slot is 2 s away at best"
        );
    }
}
