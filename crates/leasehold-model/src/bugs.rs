//! Known mistakes of Redis lock clients and servers that can be seeded into the model.
//! Each must make the checker report a counterexample (`tests/check.rs`).

/// A seeded bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Bug {
    /// `release.lua` deletes the lock without checking its owner and request id.
    ReleaseWithoutOwnerCheck,
    /// A retry after a timeout or a broken connection sends a fresh request id.
    RetryWithFreshRequestId,
    /// The local deadline is measured from the reply's receipt, not the request's send.
    DeadlineFromReceipt,
    /// A waiter made the holder by a release takes the full TTL as its lease at once,
    /// skipping the claim window it must confirm.
    HandoffSkipsClaimWindow,
}

impl Bug {
    /// Every seeded bug.
    pub const ALL: [Bug; 4] = [
        Bug::ReleaseWithoutOwnerCheck,
        Bug::RetryWithFreshRequestId,
        Bug::DeadlineFromReceipt,
        Bug::HandoffSkipsClaimWindow,
    ];
}
