//! The primitives built on the lock and its lease: leader election, semaphores (each
//! permit a lease of its own) and writer-preferring read-write locks.

pub(crate) mod election;
pub(crate) mod rwlock;
pub(crate) mod semaphore;
