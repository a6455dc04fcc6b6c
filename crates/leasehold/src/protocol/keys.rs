//! Lock names and the Redis key layout.
//!
//! Every key and channel of one lock shares the hash tag `{name}`, so every script touches
//! one slot (invariant 9). Names are validated here, before any I/O: non-empty, at most
//! [`MAX_NAME_LEN`] bytes, no braces (they would break the hash tag) and no control
//! characters (they make keys unreadable in `redis-cli` and logs).

use crate::error::{Error, Result};

/// The longest lock name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 512;

/// The key prefix used when the client builder is not given one.
pub const DEFAULT_PREFIX: &str = "leasehold";

/// The keys and channel of one lock.
#[derive(Debug, Clone)]
pub(crate) struct LockKeys {
    /// The lock hash: `owner`, `token`, `count` and one `r:<request id>` field per hold.
    pub lock: String,
    /// The fencing counter (no TTL; floored by server time).
    pub fence: String,
    /// The channel on which release announces which waiter the free lock is handed to.
    pub channel: String,
    /// The waiter queue: request id -> enqueue time (µs, server clock).
    pub queue: String,
    /// Waiter registration expiries: request id -> expiry (ms, server clock).
    pub expiries: String,
    /// The handoff reservation: the request id of the waiter a free lock is reserved for.
    pub next: String,
    /// The waiters' details (hash: request id -> try, ttl, owner, metadata), from which a
    /// release makes the oldest waiter the holder.
    pub info: String,
    /// Read-write locks only (the writer's and the readers' keys): the waiting writers'
    /// arrival order (zset: request id -> place, µs, server clock). Empty otherwise.
    pub order: String,
    /// What `lock` is, which decides how a hold on it is renewed, extended and released.
    pub kind: Kind,
}

/// What kind of lease a [`LockKeys`] describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A lock hash: `queue`, `expiries` and `next` are its waiters.
    Lock,
    /// A fair lock's hash: as `Lock`, but a release made here does not wake local
    /// waiters (the server names the one waiter it goes to).
    FairLock,
    /// The writer of a read-write lock: `lock` is the writer's lock hash, `queue` the
    /// waiting writers, `expiries` the readers and `next` the readers' tokens.
    Writer,
    /// One lease in a lease set (a semaphore permit, a reader): `lock` is the set (zset)
    /// and `queue` the tokens hash. `announce_all`: a semaphore's permits (of `capacity`,
    /// the handle's), whose `next` is the waiter queue and `expiries` its places' expiries
    /// (a release names the waiter a freed permit goes to); else readers (only the last release is announced), whose
    /// `expiries` is the writer's lock hash and `next` the waiting writers, which the read
    /// acquire checks.
    Member { announce_all: bool, capacity: u32 },
}

impl Kind {
    /// Whether a release on one server can make a waiter of this kind the holder (a lock,
    /// a fair lock, a permit, the write lock), so that a waiter giving up must also end
    /// such a grant; readers are never granted by a release.
    pub(crate) fn granted_by_release(&self) -> bool {
        !matches!(
            self,
            Kind::Member {
                announce_all: false,
                ..
            }
        )
    }
}

/// The keys of a semaphore (`{name}:sem…`), disjoint from those of a lock of the same name.
pub(crate) fn semaphore_keys(prefix: &str, name: &str) -> LockKeys {
    let set = format!("{prefix}:{{{name}}}:sem");
    LockKeys {
        fence: format!("{set}:fence"),
        channel: format!("{set}:released"),
        queue: format!("{set}:tokens"),
        expiries: format!("{set}:waiters:exp"),
        next: format!("{set}:waiters"),
        info: format!("{set}:waiters:info"),
        order: String::new(),
        // The capacity is the handle's, set with its mode (see `Lock::with_mode`).
        kind: Kind::Member {
            announce_all: true,
            capacity: 0,
        },
        lock: set,
    }
}

/// The keys of a read-write lock (`{name}:rw…`): the writer's side and the readers' side.
pub(crate) fn rwlock_keys(prefix: &str, name: &str) -> (LockKeys, LockKeys) {
    let base = format!("{prefix}:{{{name}}}:rw");
    let readers = format!("{base}:readers");
    let tokens = format!("{base}:readers:tokens");
    let writer = LockKeys {
        fence: format!("{base}:fence"),
        channel: format!("{base}:released"),
        queue: format!("{base}:writers"),
        expiries: readers.clone(),
        next: tokens.clone(),
        info: format!("{base}:writers:info"),
        order: format!("{base}:writers:order"),
        kind: Kind::Writer,
        lock: base.clone(),
    };
    let reader = LockKeys {
        lock: readers,
        fence: writer.fence.clone(),
        channel: writer.channel.clone(),
        queue: tokens,
        expiries: base,
        next: writer.queue.clone(),
        info: writer.info.clone(),
        order: writer.order.clone(),
        kind: Kind::Member {
            announce_all: false,
            capacity: 0,
        },
    };
    (writer, reader)
}

/// The Redis Cluster slot of `key` (CRC16/XMODEM of the hash tag, or of the whole key
/// when it has none, modulo 16384).
pub(crate) fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|b| *b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        rest.iter()
            .position(|b| *b == b'}')
            .filter(|len| *len > 0)
            .map(|len| &rest[..len])
    });
    let mut crc: u16 = 0;
    for byte in tagged.unwrap_or(bytes) {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc & 0x3FFF
}

impl LockKeys {
    pub(crate) fn new(prefix: &str, name: &str) -> Self {
        let lock = format!("{prefix}:{{{name}}}");
        LockKeys {
            fence: format!("{lock}:fence"),
            channel: format!("{lock}:released"),
            queue: format!("{lock}:waiters"),
            expiries: format!("{lock}:waiters:exp"),
            next: format!("{lock}:next"),
            info: format!("{lock}:waiters:info"),
            order: String::new(),
            kind: Kind::Lock,
            lock,
        }
    }
}

/// Check a lock name; the error says what to fix.
pub(crate) fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid("lock name is empty: give the lock a name"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::invalid(format!(
            "lock name is {} bytes long: use at most {MAX_NAME_LEN} bytes",
            name.len()
        )));
    }
    if name.contains(['{', '}']) {
        return Err(Error::invalid(format!(
            "lock name {name:?} contains '{{' or '}}': leasehold wraps names in a Redis hash tag, remove the braces"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "lock name {name:?} contains control characters: use printable text"
        )));
    }
    Ok(())
}

/// Check a key prefix.
pub(crate) fn validate_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() || prefix.len() > 64 {
        return Err(Error::invalid(
            "key prefix must be 1 to 64 bytes long (the default is \"leasehold\")",
        ));
    }
    if prefix.contains(['{', '}']) || prefix.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::invalid(format!(
            "key prefix {prefix:?} must not contain braces, whitespace or control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn slots_follow_the_hash_tag_like_redis_cluster() {
        // Values from CLUSTER KEYSLOT.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("123456789"), 12739);
        assert_eq!(slot("leasehold:{foo}"), slot("foo"));
        assert_eq!(slot("a{}b"), slot("a{}b"));
        assert_ne!(slot("a{}b"), slot(""));
        let k = LockKeys::new("p", "orders/7");
        for other in [
            &k.fence,
            &k.channel,
            &k.queue,
            &k.expiries,
            &k.next,
            &k.info,
        ] {
            assert_eq!(slot(other), slot(&k.lock));
        }
    }

    use super::*;

    #[test]
    fn keys_of_one_lock_share_its_hash_tag() {
        let k = LockKeys::new("leasehold", "orders:42");
        assert_eq!(k.lock, "leasehold:{orders:42}");
        assert_eq!(k.fence, "leasehold:{orders:42}:fence");
        assert_eq!(k.channel, "leasehold:{orders:42}:released");
        for key in [&k.queue, &k.expiries, &k.next] {
            assert!(key.starts_with("leasehold:{orders:42}:"), "{key}");
        }
    }

    #[test]
    fn bad_names_are_rejected_with_a_reason() {
        assert!(validate_name("").unwrap_err().to_string().contains("empty"));
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert!(validate_name(&long)
            .unwrap_err()
            .to_string()
            .contains("at most"));
        assert!(validate_name("a{b}").unwrap_err().is_invalid_input());
        assert!(validate_name("a\nb").unwrap_err().is_invalid_input());
        assert!(validate_name("jobs/nightly-report").is_ok());
        assert!(validate_name(&"x".repeat(MAX_NAME_LEN)).is_ok());
    }

    #[test]
    fn bad_prefixes_are_rejected() {
        assert!(validate_prefix("").is_err());
        assert!(validate_prefix("a b").is_err());
        assert!(validate_prefix("{x}").is_err());
        assert!(validate_prefix("app1.locks").is_ok());
    }
}
