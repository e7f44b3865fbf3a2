//! Delivery status and attempt outcome, stored as the same small integers the API uses.

use whd_proto::v1;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// Queued, in flight or waiting for a retry.
    Pending,
    /// A target answered 2xx.
    Delivered,
    /// No more attempts will be made.
    Failed,
}

impl DeliveryStatus {
    /// The value stored in the database (the proto enum number).
    pub fn as_i64(self) -> i64 {
        self.to_proto() as i64
    }

    /// Reads a stored value; anything unknown is treated as failed, which never re-sends.
    pub fn from_i64(value: i64) -> Self {
        match value {
            1 => DeliveryStatus::Pending,
            2 => DeliveryStatus::Delivered,
            _ => DeliveryStatus::Failed,
        }
    }

    /// The API enum.
    pub fn to_proto(self) -> v1::DeliveryStatus {
        match self {
            DeliveryStatus::Pending => v1::DeliveryStatus::Pending,
            DeliveryStatus::Delivered => v1::DeliveryStatus::Delivered,
            DeliveryStatus::Failed => v1::DeliveryStatus::Failed,
        }
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// The target answered 2xx.
    Success,
    /// Failed; another attempt is scheduled.
    FailedAttempt,
    /// Failed; no more attempts.
    Failure,
}

impl AttemptOutcome {
    /// The value stored in the database (the proto enum number).
    pub fn as_i64(self) -> i64 {
        self.to_proto() as i64
    }

    /// Reads a stored value.
    pub fn from_i64(value: i64) -> Self {
        match value {
            1 => AttemptOutcome::Success,
            2 => AttemptOutcome::FailedAttempt,
            _ => AttemptOutcome::Failure,
        }
    }

    /// The API enum.
    pub fn to_proto(self) -> v1::AttemptOutcome {
        match self {
            AttemptOutcome::Success => v1::AttemptOutcome::Success,
            AttemptOutcome::FailedAttempt => v1::AttemptOutcome::FailedAttempt,
            AttemptOutcome::Failure => v1::AttemptOutcome::Failure,
        }
    }

    /// Parses the API enum; `None` for UNSPECIFIED or unknown numbers.
    pub fn from_proto(value: i32) -> Option<Self> {
        match v1::AttemptOutcome::try_from(value).ok()? {
            v1::AttemptOutcome::Success => Some(AttemptOutcome::Success),
            v1::AttemptOutcome::FailedAttempt => Some(AttemptOutcome::FailedAttempt),
            v1::AttemptOutcome::Failure => Some(AttemptOutcome::Failure),
            v1::AttemptOutcome::Unspecified => None,
        }
    }

    /// The delivery status after an attempt with this outcome.
    pub fn resulting_status(self) -> DeliveryStatus {
        match self {
            AttemptOutcome::Success => DeliveryStatus::Delivered,
            AttemptOutcome::FailedAttempt => DeliveryStatus::Pending,
            AttemptOutcome::Failure => DeliveryStatus::Failed,
        }
    }
}

/// The kind of an entry in the delivery log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A webhook was accepted and queued.
    Queued,
    /// An attempt was made.
    Attempt,
}

impl EventKind {
    /// The value stored in the database (the proto enum number).
    pub fn as_i64(self) -> i64 {
        match self {
            EventKind::Queued => v1::DeliveryEventKind::Queued as i64,
            EventKind::Attempt => v1::DeliveryEventKind::Attempt as i64,
        }
    }

    /// Reads a stored value.
    pub fn from_i64(value: i64) -> Self {
        if value == v1::DeliveryEventKind::Queued as i64 {
            EventKind::Queued
        } else {
            EventKind::Attempt
        }
    }
}
