//! [`FencedResource`]: a stand-in for the storage a lock protects, checking
//! fencing tokens the way Kleppmann's fenced storage does and recording every
//! write it is asked for into a [`History`].
//!
//! Invariants: per lock name, the highest accepted token never decreases; a
//! fenced write is accepted iff its token is at least that highest (equal
//! tokens are the same grant writing again); an unfenced write is always
//! accepted and leaves the highest alone; and each write is recorded while the
//! resource's lock is held, so the history lists writes in the order the
//! resource applied them — the order [`check`](crate::history::check) relies
//! on to find stale writes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use crate::history::{History, Hold};

/// What a [`FencedResource`] did with a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The write was applied.
    Accepted,
    /// The write carried a token below one already accepted.
    Refused {
        /// The highest token accepted so far for the lock name.
        highest: u64,
    },
}

impl WriteOutcome {
    /// Whether the write was applied.
    pub fn is_accepted(self) -> bool {
        self == Self::Accepted
    }
}

/// A shared resource that accepts a write only with a fencing token at least
/// the highest it has accepted for that lock name, and records every write
/// into its [`History`].
///
/// Share it between workers as the `Arc` that [`new`](Self::new) returns;
/// every method is synchronous and takes one short lock.
#[derive(Debug)]
pub struct FencedResource {
    history: Arc<History>,
    /// Highest accepted token per lock name.
    highest: Mutex<HashMap<String, u64>>,
}

impl FencedResource {
    /// A resource with nothing written yet, recording into `history`.
    pub fn new(history: Arc<History>) -> Arc<Self> {
        Arc::new(Self {
            history,
            highest: Mutex::new(HashMap::new()),
        })
    }

    /// A fenced write by `hold`: accepted iff its token is at least the
    /// highest accepted so far for `hold.name`. Recorded either way.
    ///
    /// # Panics
    ///
    /// If `hold.token` is `None`: a lock without tokens must say so with
    /// [`write_unfenced`](Self::write_unfenced).
    pub fn write(&self, hold: &Hold) -> WriteOutcome {
        let Some(token) = hold.token else {
            panic!(
                "fenced write by {} on {:?} without a token; use write_unfenced",
                hold.holder, hold.name
            );
        };
        let mut highest = self.highest.lock().unwrap_or_else(PoisonError::into_inner);
        let outcome = match highest.get_mut(hold.name.as_str()) {
            Some(seen) if token < *seen => WriteOutcome::Refused { highest: *seen },
            Some(seen) => {
                *seen = token;
                WriteOutcome::Accepted
            }
            None => {
                highest.insert(hold.name.clone(), token);
                WriteOutcome::Accepted
            }
        };
        self.history.wrote(hold, outcome.is_accepted());
        outcome
    }

    /// An unfenced write by `hold`, for locks without tokens: always accepted
    /// and recorded (with `hold.token`, if any, for the checker's ordering).
    pub fn write_unfenced(&self, hold: &Hold) -> WriteOutcome {
        // Taken so unfenced writes are recorded in the order they are applied
        // relative to fenced ones too.
        let _order = self.highest.lock().unwrap_or_else(PoisonError::into_inner);
        self.history.wrote(hold, true);
        WriteOutcome::Accepted
    }

    /// The highest token accepted so far for `name`, if any.
    pub fn highest(&self, name: &str) -> Option<u64> {
        let highest = self.highest.lock().unwrap_or_else(PoisonError::into_inner);
        highest.get(name).copied()
    }

    /// The history this resource records into.
    pub fn history(&self) -> &Arc<History> {
        &self.history
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::EventKind;

    #[test]
    fn fenced_resource_refuses_a_lower_token_and_records_it() {
        let history = History::new();
        let resource = FencedResource::new(history.clone());
        let old = history.acquired("lock", "w1#1", Some(7));
        let new = history.acquired("lock", "w2#1", Some(8));

        assert_eq!(resource.write(&new), WriteOutcome::Accepted);
        assert_eq!(resource.write(&old), WriteOutcome::Refused { highest: 8 });
        assert_eq!(resource.highest("lock"), Some(8));

        let writes: Vec<_> = history
            .events()
            .into_iter()
            .filter(|e| matches!(e.kind, EventKind::Write { .. }))
            .map(|e| (e.holder, e.kind))
            .collect();
        assert_eq!(
            writes,
            [
                (
                    "w2#1".to_owned(),
                    EventKind::Write {
                        token: Some(8),
                        grant: 2,
                        accepted: true
                    }
                ),
                (
                    "w1#1".to_owned(),
                    EventKind::Write {
                        token: Some(7),
                        grant: 1,
                        accepted: false
                    }
                ),
            ]
        );
        let report = history.check();
        assert_eq!((report.writes_accepted, report.writes_refused), (1, 1));
        assert!(report.stale_writes_accepted.is_empty(), "{report:#}");
    }

    #[test]
    fn fenced_resource_accepts_an_equal_token_and_keeps_names_apart() {
        let history = History::new();
        let resource = FencedResource::new(history.clone());
        let a = history.acquired("a", "w1#1", Some(50));
        let b = history.acquired("b", "w2#1", Some(3));
        assert!(resource.write(&a).is_accepted());
        assert!(resource.write(&a).is_accepted());
        assert!(resource.write(&b).is_accepted());
        assert_eq!(resource.highest("a"), Some(50));
        assert_eq!(resource.highest("b"), Some(3));
        assert_eq!(resource.highest("c"), None);
    }

    #[test]
    fn refused_write_from_a_holder_paused_before_recording_leaves_the_history_clean() {
        // w1 was granted token 1 but paused before it recorded the grant; its
        // lease expired, w2 got token 2, wrote and released; then w1 woke up,
        // recorded and wrote. Fencing refuses it, so nothing stale landed.
        let history = History::new();
        let resource = FencedResource::new(history.clone());
        let w2 = history.acquired("lock", "w2#1", Some(2));
        assert!(resource.write(&w2).is_accepted());
        history.released(&w2);
        let w1 = history.acquired("lock", "w1#1", Some(1));
        assert_eq!(resource.write(&w1), WriteOutcome::Refused { highest: 2 });
        history.released(&w1);
        let report = history.check();
        assert!(report.is_clean(), "{report:#}");
        assert_eq!(report.writes_refused, 1);
    }

    #[test]
    fn unfenced_writes_are_accepted_and_a_superseded_one_is_flagged_by_check() {
        // A naive lock: w1's lease ran out unnoticed, w2 was granted, wrote
        // and released, then w1 wrote — and nothing stopped it.
        let history = History::new();
        let resource = FencedResource::new(history.clone());
        let old = history.acquired("lock", "w1#1", None);
        let new = history.acquired("lock", "w2#1", None);
        assert!(resource.write_unfenced(&new).is_accepted());
        history.released(&new);
        assert!(resource.write_unfenced(&old).is_accepted());
        history.released(&old);
        assert_eq!(resource.highest("lock"), None);

        let report = history.check();
        assert_eq!((report.writes_accepted, report.writes_refused), (2, 0));
        assert_eq!(report.stale_writes_accepted.len(), 1, "{report:#}");
        let stale = &report.stale_writes_accepted[0];
        assert_eq!(
            (stale.write.holder.as_str(), stale.write.grant),
            ("w1#1", 1)
        );
        assert_eq!(
            (
                stale.superseded_by.holder.as_str(),
                stale.superseded_by.grant
            ),
            ("w2#1", 2)
        );
    }

    #[test]
    #[should_panic(expected = "without a token; use write_unfenced")]
    fn fenced_write_without_a_token_panics() {
        let history = History::new();
        let resource = FencedResource::new(history.clone());
        let hold = history.acquired("lock", "w1#1", None);
        resource.write(&hold);
    }

    #[test]
    fn concurrent_writers_are_all_recorded_and_tokens_never_go_back() {
        let history = History::new();
        let resource = FencedResource::new(history.clone());
        let threads: Vec<_> = (0..8u64)
            .map(|worker| {
                let (history, resource) = (history.clone(), resource.clone());
                std::thread::spawn(move || {
                    for round in 0..100u64 {
                        let holder = format!("w{worker}#{round}");
                        let hold = history.acquired("lock", &holder, Some(round * 8 + worker));
                        let _ = resource.write(&hold);
                        history.released(&hold);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let report = history.check();
        assert_eq!(report.acquisitions, 800);
        assert_eq!(report.writes_accepted + report.writes_refused, 800);
        assert!(report.stale_writes_accepted.is_empty(), "{report}");
        assert_eq!(resource.highest("lock"), Some(799));
    }
}
