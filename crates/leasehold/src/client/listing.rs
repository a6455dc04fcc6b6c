//! Listing what is held under the client's prefix: [`Client::list`] finds the names of
//! locks, semaphores and read-write locks matching a glob with `SCAN` (never `KEYS`), on
//! one server, on every Cluster primary, or on every RedLock node, and says whether it
//! stopped at its limit. The server work is the backend seam's (`backend/keyspace.rs`).

use serde::Serialize;

use crate::backend::keyspace::Shape;
use crate::client::Client;
use crate::error::{Error, Result};

/// The most names [`Client::list`] returns unless told otherwise (what `leasehold list`
/// uses without `--limit`).
pub const LIST_LIMIT: usize = 10_000;

/// What a listed name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum PrimitiveKind {
    /// A lock (plain or fair); see [`Client::inspect`].
    Lock,
    /// A semaphore; see [`Client::inspect_semaphore`].
    Semaphore,
    /// A read-write lock; see [`Client::inspect_rwlock`].
    RwLock,
}

impl std::fmt::Display for PrimitiveKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PrimitiveKind::Lock => "lock",
            PrimitiveKind::Semaphore => "semaphore",
            PrimitiveKind::RwLock => "rwlock",
        })
    }
}

/// One name found by [`Client::list`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Listed {
    /// The name, as given to [`Client::lock`], [`Client::semaphore`] or
    /// [`Client::rwlock`].
    pub name: String,
    /// What it is.
    pub kind: PrimitiveKind,
}

/// What [`Client::list`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Listing {
    /// The names found, sorted by name and kind; a name used by a lock and a semaphore
    /// appears twice.
    pub entries: Vec<Listed>,
    /// More names match than the limit let through: which ones are listed then depends
    /// on the scan's order. Narrow the pattern or raise the limit.
    pub truncated: bool,
}

impl Listing {
    /// The names of the entries of `kind`.
    pub fn names(&self, kind: PrimitiveKind) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.name.as_str())
            .collect()
    }
}

impl Client {
    /// The locks, semaphores and read-write locks whose name matches `pattern` (a Redis
    /// glob: `*`, `?`, `[...]`; `*` for all), at most `limit` of them, found with `SCAN`
    /// (never `KEYS`). A name is listed when its key exists, which for a lock means it is
    /// held; [`Client::inspect`] and its kin say by whom. Keys under the prefix that are not
    /// leasehold's shapes are skipped; one of a leasehold shape but another type shows up
    /// when inspected ([`ErrorKind::ForeignKey`](crate::ErrorKind::ForeignKey)).
    ///
    /// ```no_run
    /// # async fn demo(client: leasehold::Client) -> leasehold::Result<()> {
    /// let found = client.list("jobs/*", leasehold::LIST_LIMIT).await?;
    /// for name in found.names(leasehold::PrimitiveKind::Lock) {
    ///     let info = client.inspect(name).await?;
    ///     println!("{name}: {:?}", info.holder.map(|h| h.owner_id));
    /// }
    /// if found.truncated {
    ///     eprintln!("more locks match; narrow the pattern");
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn list(&self, pattern: &str, limit: usize) -> Result<Listing> {
        self.inner.check_open()?;
        if pattern.is_empty() || pattern.len() > crate::MAX_NAME_LEN || pattern.contains(['{', '}'])
        {
            return Err(Error::invalid(
                "name pattern must be 1 to 512 bytes without braces (e.g. 'jobs/*')",
            ));
        }
        if limit == 0 {
            return Err(Error::invalid("list limit must be at least 1"));
        }
        let (found, truncated) =
            crate::backend::keyspace::list(&self.inner, pattern, limit).await?;
        let entries = found
            .into_iter()
            .map(|(name, shape)| Listed {
                name,
                kind: match shape {
                    Shape::Lock => PrimitiveKind::Lock,
                    Shape::Semaphore => PrimitiveKind::Semaphore,
                    Shape::RwLock => PrimitiveKind::RwLock,
                },
            })
            .collect();
        Ok(Listing { entries, truncated })
    }
}
