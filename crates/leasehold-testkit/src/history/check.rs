//! [`check`]: reads a history of holds and writes the way a Jepsen checker
//! does and reports every violation of mutual exclusion it can prove.
//!
//! Three properties, from weakest guarantee to strongest:
//! * **overlaps** — two holds of one name whose *believed* intervals
//!   (`Acquired` up to the first `Released` / `LostNotified`, else open)
//!   overlap. A lease cannot rule these out under process pauses; they are
//!   what fencing exists for.
//! * **stale writes accepted** — the resource applied a write of an older
//!   hold after it had applied one of a newer hold of the same name. This is
//!   the property fencing guarantees; an unfenced lock (or a fencing bug)
//!   breaks it. Holds are ordered by fencing token when every write to that
//!   name carries one (the server's grant order), else by grant.
//! * **work after lost** / **writes outside a hold** — a holder kept writing
//!   after it was told its lease was lost, after it released, or without a
//!   recorded acquisition.
//!
//! Invariants: `check` is a pure function of its events, ordered by time with
//! ties kept in slice order; it never panics, whatever the events (events about
//! unknown holds are reported or ignored, never trusted); and every violation
//! carries times relative to the earliest event.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use super::{
    report::{
        HoldSpan, OutsideReason, Overlap, Report, SpanEnd, StaleWrite, WorkAfterLost, WriteInfo,
        WriteOutsideHold,
    },
    Event, EventKind,
};

/// Checks `events` (in any order) and reports every violation found.
pub fn check(events: &[Event]) -> Report {
    let mut ordered: Vec<&Event> = events.iter().collect();
    ordered.sort_by_key(|event| event.at);
    let Some(first) = ordered.first() else {
        return Report::default();
    };
    let mut checker = Checker {
        start: Some(first.at),
        tokened: tokened_names(&ordered),
        ..Checker::default()
    };
    for (seq, event) in ordered.iter().enumerate() {
        checker.step(seq, event);
    }
    checker.finish()
}

/// Names whose every write carries a token, so tokens order their holds.
fn tokened_names<'a>(events: &[&'a Event]) -> HashSet<&'a str> {
    let mut untokened = HashSet::new();
    let mut written = HashSet::new();
    for event in events {
        if let EventKind::Write { token, .. } = event.kind {
            written.insert(event.name.as_str());
            if token.is_none() {
                untokened.insert(event.name.as_str());
            }
        }
    }
    written.retain(|name| !untokened.contains(name));
    written
}

/// One hold as the checker tracks it; `seq` is an event's position in time
/// order.
struct HoldState<'a> {
    name: &'a str,
    holder: &'a str,
    grant: u64,
    token: Option<u64>,
    from: (usize, Instant),
    /// The first of its release and lost notice.
    end: Option<(usize, Instant, SpanEnd)>,
    released: Option<Instant>,
    lost: Option<Instant>,
}

/// The newest hold whose write a name's resource has applied.
struct Newest {
    rank: u64,
    write: WriteInfo,
}

#[derive(Default)]
struct Checker<'a> {
    start: Option<Instant>,
    tokened: HashSet<&'a str>,
    holds: Vec<HoldState<'a>>,
    /// Latest hold per (name, holder), for releases and lost notices.
    by_holder: HashMap<(&'a str, &'a str), usize>,
    /// Hold per (name, holder, grant), for writes.
    by_grant: HashMap<(&'a str, &'a str, u64), usize>,
    newest: HashMap<&'a str, Newest>,
    report: Report,
}

impl<'a> Checker<'a> {
    fn since_start(&self, at: Instant) -> Duration {
        self.start
            .map_or(Duration::ZERO, |start| at.saturating_duration_since(start))
    }

    fn step(&mut self, seq: usize, event: &'a Event) {
        let (name, holder) = (event.name.as_str(), event.holder.as_str());
        match event.kind {
            EventKind::Acquired { token, grant } => {
                self.report.acquisitions += 1;
                let index = self.holds.len();
                self.holds.push(HoldState {
                    name,
                    holder,
                    grant,
                    token,
                    from: (seq, event.at),
                    end: None,
                    released: None,
                    lost: None,
                });
                self.by_holder.insert((name, holder), index);
                self.by_grant.insert((name, holder, grant), index);
            }
            EventKind::Released => {
                self.report.releases += 1;
                if let Some(hold) = self.hold_of(name, holder) {
                    hold.released.get_or_insert(event.at);
                    hold.end.get_or_insert((seq, event.at, SpanEnd::Released));
                }
            }
            EventKind::LostNotified => {
                self.report.lost_notices += 1;
                if let Some(hold) = self.hold_of(name, holder) {
                    hold.lost.get_or_insert(event.at);
                    hold.end
                        .get_or_insert((seq, event.at, SpanEnd::LostNotified));
                }
            }
            EventKind::Write {
                token,
                grant,
                accepted,
            } => {
                let write = WriteInfo {
                    name: name.to_owned(),
                    holder: holder.to_owned(),
                    grant,
                    token,
                    accepted,
                    at: self.since_start(event.at),
                };
                self.write(write, name, holder);
            }
        }
    }

    fn hold_of(&mut self, name: &str, holder: &str) -> Option<&mut HoldState<'a>> {
        let index = *self.by_holder.get(&(name, holder))?;
        self.holds.get_mut(index)
    }

    fn write(&mut self, write: WriteInfo, name: &'a str, holder: &'a str) {
        if write.accepted {
            self.report.writes_accepted += 1;
            self.check_stale(&write, name);
        } else {
            self.report.writes_refused += 1;
        }
        let hold = self
            .by_grant
            .get(&(name, holder, write.grant))
            .and_then(|&index| self.holds.get(index));
        let (lost, released) = match hold {
            Some(hold) => (hold.lost, hold.released),
            None => {
                let reason = OutsideReason::NeverAcquired;
                self.report
                    .writes_outside_hold
                    .push(WriteOutsideHold { write, reason });
                return;
            }
        };
        if let Some(lost) = lost {
            let lost_at = self.since_start(lost);
            self.report
                .work_after_lost
                .push(WorkAfterLost { write, lost_at });
        } else if let Some(released) = released {
            let released_at = self.since_start(released);
            let reason = OutsideReason::AfterRelease { released_at };
            self.report
                .writes_outside_hold
                .push(WriteOutsideHold { write, reason });
        }
    }

    /// Flags an accepted write ranked below the newest accepted one of its
    /// name, else makes it the newest.
    fn check_stale(&mut self, write: &WriteInfo, name: &'a str) {
        let rank = match write.token {
            Some(token) if self.tokened.contains(name) => token,
            _ => write.grant,
        };
        match self.newest.get(name) {
            Some(newest) if rank < newest.rank => {
                self.report.stale_writes_accepted.push(StaleWrite {
                    write: write.clone(),
                    superseded_by: newest.write.clone(),
                });
            }
            Some(newest) if rank == newest.rank => {}
            _ => {
                let write = write.clone();
                self.newest.insert(name, Newest { rank, write });
            }
        }
    }

    fn finish(mut self) -> Report {
        let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
        for (index, hold) in self.holds.iter().enumerate() {
            by_name.entry(hold.name).or_default().push(index);
        }
        let mut names: Vec<_> = by_name.keys().copied().collect();
        names.sort_unstable();
        for name in names {
            // Holds are in acquisition order; a later hold overlaps an
            // earlier one iff it was acquired before the earlier one's end.
            let holds = &by_name[name];
            for (i, &earlier) in holds.iter().enumerate() {
                let end = self.holds[earlier].end.map(|(seq, ..)| seq);
                for &later in &holds[i + 1..] {
                    if end.is_some_and(|end| self.holds[later].from.0 > end) {
                        break;
                    }
                    let overlap = Overlap {
                        earlier: self.span(earlier),
                        later: self.span(later),
                    };
                    self.report.overlaps.push(overlap);
                }
            }
        }
        self.report
    }

    fn span(&self, index: usize) -> HoldSpan {
        let hold = &self.holds[index];
        let (until, end) = match hold.end {
            Some((_, at, end)) => (Some(self.since_start(at)), end),
            None => (None, SpanEnd::Open),
        };
        HoldSpan {
            name: hold.name.to_owned(),
            holder: hold.holder.to_owned(),
            grant: hold.grant,
            token: hold.token,
            from: self.since_start(hold.from.1),
            until,
            end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds histories by hand, one event per call, `ms` after a common base.
    struct Script {
        base: Instant,
        events: Vec<Event>,
    }

    impl Script {
        fn new() -> Self {
            Self {
                base: Instant::now(),
                events: Vec::new(),
            }
        }

        fn push(&mut self, ms: u64, name: &str, holder: &str, kind: EventKind) -> &mut Self {
            self.events.push(Event {
                at: self.base + Duration::from_millis(ms),
                name: name.into(),
                holder: holder.into(),
                kind,
            });
            self
        }

        fn acquired(&mut self, ms: u64, holder: &str, grant: u64, token: Option<u64>) -> &mut Self {
            self.push(ms, "lock", holder, EventKind::Acquired { token, grant })
        }

        fn released(&mut self, ms: u64, holder: &str) -> &mut Self {
            self.push(ms, "lock", holder, EventKind::Released)
        }

        fn lost(&mut self, ms: u64, holder: &str) -> &mut Self {
            self.push(ms, "lock", holder, EventKind::LostNotified)
        }

        fn write(
            &mut self,
            ms: u64,
            holder: &str,
            grant: u64,
            token: Option<u64>,
            accepted: bool,
        ) -> &mut Self {
            let kind = EventKind::Write {
                token,
                grant,
                accepted,
            };
            self.push(ms, "lock", holder, kind)
        }

        fn check(&self) -> Report {
            check(&self.events)
        }
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn empty_history_is_clean() {
        let report = check(&[]);
        assert!(report.is_clean());
        assert_eq!(report, Report::default());
    }

    #[test]
    fn overlapping_believed_intervals_are_reported_with_their_spans() {
        let report = Script::new()
            .acquired(10, "w1#1", 1, None)
            .acquired(20, "w2#1", 2, None)
            .released(30, "w1#1")
            .released(40, "w2#1")
            .check();
        assert_eq!(report.overlaps.len(), 1, "{report:#}");
        let overlap = &report.overlaps[0];
        assert_eq!(overlap.earlier.holder, "w1#1");
        assert_eq!(overlap.earlier.from, ms(0));
        assert_eq!(overlap.earlier.until, Some(ms(20)));
        assert_eq!(overlap.earlier.end, SpanEnd::Released);
        assert_eq!(overlap.later.holder, "w2#1");
        assert_eq!(overlap.later.from, ms(10));
        assert!(!report.is_clean());
    }

    #[test]
    fn back_to_back_holds_do_not_overlap() {
        let report = Script::new()
            .acquired(10, "w1#1", 1, None)
            .released(20, "w1#1")
            .acquired(20, "w2#1", 2, None)
            .released(30, "w2#1")
            .acquired(40, "w3#1", 3, None)
            .check();
        assert!(report.is_clean(), "{report:#}");
        assert_eq!((report.acquisitions, report.releases), (3, 2));
    }

    #[test]
    fn hold_notified_lost_before_the_next_acquire_does_not_overlap_it() {
        let report = Script::new()
            .acquired(10, "w1#1", 1, None)
            .lost(20, "w1#1")
            .acquired(30, "w2#1", 2, None)
            .released(40, "w1#1")
            .released(50, "w2#1")
            .check();
        assert!(report.overlaps.is_empty(), "{report:#}");
        assert_eq!(report.lost_notices, 1);
    }

    #[test]
    fn hold_never_ended_overlaps_every_later_hold_of_the_same_name() {
        let report = Script::new()
            .acquired(10, "w1#1", 1, None)
            .acquired(20, "w2#1", 2, None)
            .released(30, "w2#1")
            .acquired(40, "w3#1", 3, None)
            .push(
                50,
                "other",
                "w4#1",
                EventKind::Acquired {
                    token: None,
                    grant: 1,
                },
            )
            .check();
        let pairs: Vec<_> = report
            .overlaps
            .iter()
            .map(|o| (o.earlier.holder.as_str(), o.later.holder.as_str()))
            .collect();
        assert_eq!(pairs, [("w1#1", "w2#1"), ("w1#1", "w3#1")], "{report:#}");
        assert_eq!(report.overlaps[0].earlier.until, None);
        assert_eq!(report.overlaps[0].earlier.end, SpanEnd::Open);
    }

    #[test]
    fn accepted_write_of_a_stale_grant_after_the_newer_grant_wrote_is_reported() {
        // Naive lock, no tokens: w1's lease expired during a pause it never
        // noticed, w2 was granted and wrote, then w1 woke up and wrote.
        let report = Script::new()
            .acquired(10, "w1#1", 1, None)
            .write(15, "w1#1", 1, None, true)
            .acquired(20, "w2#1", 2, None)
            .write(25, "w2#1", 2, None, true)
            .released(30, "w2#1")
            .write(40, "w1#1", 1, None, true)
            .released(50, "w1#1")
            .check();
        assert_eq!(report.stale_writes_accepted.len(), 1, "{report:#}");
        let stale = &report.stale_writes_accepted[0];
        assert_eq!(
            (stale.write.holder.as_str(), stale.write.at),
            ("w1#1", ms(30))
        );
        assert_eq!(stale.superseded_by.holder, "w2#1");
        assert_eq!(stale.superseded_by.grant, 2);
        assert_eq!(report.writes_accepted, 3);
    }

    #[test]
    fn old_grant_writing_before_the_new_grant_writes_is_not_stale() {
        // What a fenced resource legitimately accepts: it has not yet seen the
        // newer token, so the old write serialises before the new hold.
        let report = Script::new()
            .acquired(10, "w1#1", 1, Some(7))
            .acquired(20, "w2#1", 2, Some(8))
            .write(25, "w1#1", 1, Some(7), true)
            .write(30, "w2#1", 2, Some(8), true)
            .check();
        assert!(report.stale_writes_accepted.is_empty(), "{report:#}");
        assert_eq!(report.overlaps.len(), 1);
    }

    #[test]
    fn refused_stale_write_is_not_reported_as_stale() {
        let report = Script::new()
            .acquired(10, "w1#1", 1, Some(7))
            .acquired(20, "w2#1", 2, Some(8))
            .write(25, "w2#1", 2, Some(8), true)
            .write(30, "w1#1", 1, Some(7), false)
            .check();
        assert!(report.stale_writes_accepted.is_empty(), "{report:#}");
        assert_eq!((report.writes_accepted, report.writes_refused), (1, 1));
    }

    #[test]
    fn tokens_order_holds_when_recording_order_disagrees() {
        // w1 was granted token 7 by the server but paused before recording;
        // w2 got token 8, recorded first (grant 1) and wrote; w1 then
        // recorded (grant 2). Token order, not grant order, is the truth: an
        // accepted write of token 7 after token 8's is stale.
        let report = Script::new()
            .acquired(10, "w2#1", 1, Some(8))
            .write(15, "w2#1", 1, Some(8), true)
            .released(20, "w2#1")
            .acquired(30, "w1#1", 2, Some(7))
            .write(35, "w1#1", 2, Some(7), true)
            .check();
        assert_eq!(report.stale_writes_accepted.len(), 1, "{report:#}");
        assert_eq!(report.stale_writes_accepted[0].write.token, Some(7));
        assert!(report.overlaps.is_empty());
    }

    #[test]
    fn write_after_lost_notice_is_reported_whether_accepted_or_refused() {
        let report = Script::new()
            .acquired(10, "w1#1", 1, Some(3))
            .write(15, "w1#1", 1, Some(3), true)
            .lost(20, "w1#1")
            .write(25, "w1#1", 1, Some(3), true)
            .write(30, "w1#1", 1, Some(3), false)
            .released(35, "w1#1")
            .check();
        let late: Vec<_> = report
            .work_after_lost
            .iter()
            .map(|w| (w.write.at, w.write.accepted, w.lost_at))
            .collect();
        assert_eq!(
            late,
            [(ms(15), true, ms(10)), (ms(20), false, ms(10))],
            "{report:#}"
        );
        assert!(report.writes_outside_hold.is_empty());
        assert!(!report.is_clean());
    }

    #[test]
    fn write_after_release_or_without_acquire_is_outside_a_hold() {
        let report = Script::new()
            .acquired(10, "w1#1", 1, None)
            .released(20, "w1#1")
            .write(30, "w1#1", 1, None, true)
            .write(40, "ghost", 9, None, false)
            .check();
        let reasons: Vec<_> = report
            .writes_outside_hold
            .iter()
            .map(|w| (w.write.holder.as_str(), w.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                (
                    "w1#1",
                    OutsideReason::AfterRelease {
                        released_at: ms(10)
                    }
                ),
                ("ghost", OutsideReason::NeverAcquired),
            ],
            "{report:#}"
        );
    }

    #[test]
    fn events_out_of_time_order_are_checked_in_time_order() {
        let mut script = Script::new();
        script
            .released(20, "w1#1")
            .acquired(30, "w2#1", 2, None)
            .acquired(10, "w1#1", 1, None);
        assert!(script.check().is_clean(), "{:#}", script.check());
    }

    #[test]
    fn display_is_one_line_and_names_the_first_violation() {
        let clean = Script::new()
            .acquired(10, "w1#1", 1, Some(1))
            .write(11, "w1#1", 1, Some(1), true)
            .released(12, "w1#1")
            .check();
        assert_eq!(
            clean.to_string(),
            "clean: 1 acquisitions, 1 releases, 0 lost notices, 1 writes accepted, 0 refused"
        );
        let dirty = Script::new()
            .acquired(10, "w1#1", 1, None)
            .acquired(20, "w2#1", 2, None)
            .check();
        let line = dirty.to_string();
        assert!(!line.contains('\n'), "{line}");
        assert!(line.starts_with("VIOLATIONS: 1 overlaps"), "{line}");
        assert!(
            line.ends_with(
                "first: overlap on \"lock\": w1#1 (grant 1, token -) 0ns..open \
                 and w2#1 (grant 2, token -) 10ms..open"
            ),
            "{line}"
        );
        assert_eq!(format!("{dirty:#}").lines().count(), 2);
    }
}
