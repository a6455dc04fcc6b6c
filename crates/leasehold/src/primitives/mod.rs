//! The primitives built on the lock and its lease: leader election and its observers,
//! semaphores (each grant a lease of its own), writer-preferring read-write locks and lock
//! sets (several locks all or none).

pub(crate) mod election;
pub(crate) mod lock_set;
pub(crate) mod observe;
pub(crate) mod rwlock;
pub(crate) mod semaphore;
