//! [`Report`]: what [`check`](super::check) found — counts, and each
//! violation with enough detail to debug it.
//!
//! Invariants: every time in a report is relative to the first event of the
//! checked history, so reports of one scenario read alike across runs; a
//! report is clean iff all of its violation lists are empty; its `Display` is
//! one line unless the alternate form (`{:#}`) asks for every violation.

use std::{fmt, time::Duration};

/// What [`check`](super::check) found: counts, and every violation with its details.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// `Acquired` events.
    pub acquisitions: usize,
    /// `Released` events.
    pub releases: usize,
    /// `LostNotified` events.
    pub lost_notices: usize,
    /// Writes the resource applied.
    pub writes_accepted: usize,
    /// Writes the resource refused.
    pub writes_refused: usize,
    /// Pairs of holds of one name whose believed intervals overlap.
    pub overlaps: Vec<Overlap>,
    /// Accepted writes of a hold already superseded on the resource.
    pub stale_writes_accepted: Vec<StaleWrite>,
    /// Writes (accepted or refused) by a hold after its own lost notice.
    pub work_after_lost: Vec<WorkAfterLost>,
    /// Writes by a hold after it released, or by a hold never acquired.
    pub writes_outside_hold: Vec<WriteOutsideHold>,
}

impl Report {
    /// Whether no violation of any kind was found.
    pub fn is_clean(&self) -> bool {
        self.overlaps.is_empty()
            && self.stale_writes_accepted.is_empty()
            && self.work_after_lost.is_empty()
            && self.writes_outside_hold.is_empty()
    }

    /// The first violation, in the order the report lists kinds.
    fn first_violation(&self) -> Option<&dyn fmt::Display> {
        let overlap = self.overlaps.first().map(|v| v as &dyn fmt::Display);
        overlap
            .or_else(|| self.stale_writes_accepted.first().map(|v| v as _))
            .or_else(|| self.work_after_lost.first().map(|v| v as _))
            .or_else(|| self.writes_outside_hold.first().map(|v| v as _))
    }

    fn violations(&self) -> impl Iterator<Item = &dyn fmt::Display> {
        let overlaps = self.overlaps.iter().map(|v| v as &dyn fmt::Display);
        overlaps
            .chain(self.stale_writes_accepted.iter().map(|v| v as _))
            .chain(self.work_after_lost.iter().map(|v| v as _))
            .chain(self.writes_outside_hold.iter().map(|v| v as _))
    }
}

/// One line: counts, and the first violation if any. The alternate form
/// (`{:#}`) adds every violation on a line of its own.
impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts = format!(
            "{} acquisitions, {} releases, {} lost notices, {} writes accepted, {} refused",
            self.acquisitions,
            self.releases,
            self.lost_notices,
            self.writes_accepted,
            self.writes_refused
        );
        let Some(first) = self.first_violation() else {
            return write!(f, "clean: {counts}");
        };
        write!(
            f,
            "VIOLATIONS: {} overlaps, {} stale writes accepted, {} writes after lost, \
             {} writes outside a hold ({counts}); first: {first}",
            self.overlaps.len(),
            self.stale_writes_accepted.len(),
            self.work_after_lost.len(),
            self.writes_outside_hold.len(),
        )?;
        if f.alternate() {
            for violation in self.violations() {
                write!(f, "\n  {violation}")?;
            }
        }
        Ok(())
    }
}

/// How a hold's believed interval ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanEnd {
    /// By its `Released`.
    Released,
    /// By its `LostNotified`.
    LostNotified,
    /// Not before the history ended.
    Open,
}

/// One hold's believed interval, in time since the history's first event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldSpan {
    /// The lock name.
    pub name: String,
    /// The hold.
    pub holder: String,
    /// Its grant.
    pub grant: u64,
    /// Its fencing token, if any.
    pub token: Option<u64>,
    /// When it was acquired.
    pub from: Duration,
    /// When its belief ended; `None` if it was still open at the end.
    pub until: Option<Duration>,
    /// What ended it.
    pub end: SpanEnd,
}

impl fmt::Display for HoldSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (grant {}, token {}) {:?}..",
            self.holder,
            self.grant,
            Token(self.token),
            self.from
        )?;
        match (self.until, self.end) {
            (Some(until), SpanEnd::Released) => write!(f, "{until:?} released"),
            (Some(until), _) => write!(f, "{until:?} lost"),
            (None, _) => f.write_str("open"),
        }
    }
}

/// Two holds of one name that both believed they held it at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    /// The hold acquired first.
    pub earlier: HoldSpan,
    /// The hold acquired while `earlier` still believed it held the lock.
    pub later: HoldSpan,
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "overlap on {:?}: {} and {}",
            self.earlier.name, self.earlier, self.later
        )
    }
}

/// One write, in time since the history's first event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteInfo {
    /// The lock name.
    pub name: String,
    /// The writing hold.
    pub holder: String,
    /// Its grant.
    pub grant: u64,
    /// The token the write carried, if any.
    pub token: Option<u64>,
    /// Whether the resource applied it.
    pub accepted: bool,
    /// When it was made.
    pub at: Duration,
}

impl fmt::Display for WriteInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.accepted { "accepted" } else { "refused" };
        write!(
            f,
            "{verdict} write on {:?} by {} (grant {}, token {}) at {:?}",
            self.name,
            self.holder,
            self.grant,
            Token(self.token),
            self.at
        )
    }
}

/// An accepted write of a hold older than one whose write the resource had
/// already accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleWrite {
    /// The stale write.
    pub write: WriteInfo,
    /// The earlier accepted write of the newer hold.
    pub superseded_by: WriteInfo,
}

impl fmt::Display for StaleWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stale {}, after {}", self.write, self.superseded_by)
    }
}

/// A write by a hold after it was told its lease was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkAfterLost {
    /// The write.
    pub write: WriteInfo,
    /// When the hold was told.
    pub lost_at: Duration,
}

impl fmt::Display for WorkAfterLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} after its lost notice at {:?}",
            self.write, self.lost_at
        )
    }
}

/// Why a write was outside any hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutsideReason {
    /// No `Acquired` with this name, holder and grant precedes it.
    NeverAcquired,
    /// The hold had released.
    AfterRelease {
        /// When it released.
        released_at: Duration,
    },
}

/// A write by a hold that was not holding: released, or never acquired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutsideHold {
    /// The write.
    pub write: WriteInfo,
    /// Why it was outside a hold.
    pub reason: OutsideReason,
}

impl fmt::Display for WriteOutsideHold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            OutsideReason::NeverAcquired => write!(f, "{} by a hold never acquired", self.write),
            OutsideReason::AfterRelease { released_at } => {
                write!(f, "{} after its release at {released_at:?}", self.write)
            }
        }
    }
}

/// Formats an optional token as the number or `-`.
struct Token(Option<u64>);

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(token) => write!(f, "{token}"),
            None => f.write_str("-"),
        }
    }
}
