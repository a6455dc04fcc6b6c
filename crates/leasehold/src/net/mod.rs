//! The network layer: the command connection (its fencing of abandoned connections and
//! the classification of every failure as not sent, unknown or a server reply; calls
//! ready at the same moment coalesced into one batch script call), where a
//! server is (one URL, Sentinel, Cluster seeds), TLS, and the pub/sub waker that wakes
//! waiters.
//! Nothing here knows about locks; everything above sends its scripts through it.

pub(crate) mod coalesce;
pub(crate) mod conn;
pub(crate) mod endpoint;
pub(crate) mod failure;
pub(crate) mod tls;
pub(crate) mod wait;
