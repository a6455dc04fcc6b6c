//! The torture suite's cells as data: each [`Scenario`] names the faults it injects
//! ([`Fault`]), and each [`LockKind`] one lock under test. Nothing here runs anything; the
//! cell runner in `torture.rs` reads these lists.
//!
//! Invariants: every duration is bounded and relative to the cells' 400 ms lease; the
//! names are the command line's and the JSON output's (kebab-case), and never change.

use std::time::Duration;

use serde::Serialize;

/// A named fault scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// No faults: contention only.
    Baseline,
    /// Replies to writes lost (seed 004).
    DroppedReplies,
    /// Replies to writes later than the clients' timeout.
    LateReplies,
    /// Every connection reset now and then.
    ConnectionResets,
    /// Holders paused past their lease (seeds 002 and 003).
    PausedHolder,
    /// Redis paused (SIGSTOP) past the lease.
    RedisPaused,
    /// Redis restarted without persistence, after the longest lease.
    RedisRestart,
    /// Acquires cancelled mid-call (seed 000).
    CancelledAcquires,
    /// Redis restarted at once without persistence (no delay): every lock key is gone
    /// while holders still hold.
    RedisRestartAtOnce,
    /// Redis restarted from an older RDB snapshot: counters and keys rolled back.
    SnapshotRollback,
    /// Sentinel: the master killed while locks are held and contended; the replica is
    /// promoted, the old master comes back as a replica.
    SentinelFailover,
    /// The same, with grants counted only once a replica acknowledged them (`WAIT`).
    SentinelFailoverAcked,
    /// RedLock over 5 masters: one node at a time killed and restarted at once, empty.
    RedlockNodeRestart,
    /// RedLock over 5 masters: two nodes paused (SIGSTOP) past the lease, again and again.
    RedlockNodesPaused,
    /// Redis Cluster: the lock's primary and its replica swap roles (`CLUSTER FAILOVER`)
    /// again and again.
    ClusterFailover,
    /// Redis Cluster: the lock's slot migrated between primaries (`MIGRATING`/`IMPORTING`,
    /// `ASK` then `MOVED`) again and again.
    ClusterSlotMigration,
    /// Waiters that died while queued, first in line: a release grants them the lock,
    /// nobody confirms it, and the grant must lapse after the claim window and go on.
    GhostGrantees,
    /// Pub/sub messages lost (grant and wake-up messages never arrive).
    GrantMessagesLost,
    /// Replies to coalesced calls (batch script calls) lost: 16 workers on one client over
    /// 4 locks, so that calls are ready at once and go in batches.
    BatchRepliesLost,
    /// Renewals held in the network past the claim window: a waiter granted the lock by a
    /// release confirms it too late (as if paused right after the grant), and holders
    /// work past the claim window.
    ConfirmationsLate,
}

/// Where a scenario's cells run: one private server behind the fault proxy, or a topology
/// of the test kit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One redis-server behind the fault proxy (every lock).
    Server,
    /// A master, a replica and three sentinels (leasehold only); `acks`: replica_acks(1).
    Sentinel {
        /// Grants need one replica's acknowledgement.
        acks: bool,
    },
    /// Five independent masters (leasehold only).
    RedLock,
    /// Three primaries, the lock's with a replica (leasehold only).
    Cluster,
}

/// One fault of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every `period`, drop the replies to the next `first` write commands (SET, SETNX,
    /// EVALSHA).
    DropWriteReplies {
        /// How many replies each time.
        first: usize,
        /// How often.
        period: Duration,
    },
    /// Every `period`, delay the replies to the next `first` write commands by `by`.
    DelayWriteReplies {
        /// How many replies each time.
        first: usize,
        /// The delay (longer than the clients' 150 ms timeout).
        by: Duration,
        /// How often.
        period: Duration,
    },
    /// Reset every connection through the proxy after each `period`.
    ResetConnections {
        /// How often.
        period: Duration,
    },
    /// After `after`, pause Redis for `pause`, again and again.
    PauseRedis {
        /// Running time before each pause.
        after: Duration,
        /// How long Redis stays stopped.
        pause: Duration,
    },
    /// After `after`, stop Redis and start it again, without its data, `down` later.
    RestartRedis {
        /// Running time before each restart.
        after: Duration,
        /// How long Redis stays down (longer than every lease: a delayed restart).
        down: Duration,
    },
    /// Every `every`-th hold, the holder pauses for `pause` while holding.
    PauseHolders {
        /// Which holds pause.
        every: usize,
        /// For how long (past the lease).
        pause: Duration,
    },
    /// Acquires are cancelled within `within` of their start.
    CancelAcquires {
        /// The longest an acquire runs before it is cancelled.
        within: Duration,
    },
    /// Every `period`, put a waiter that will never confirm (its details, a place ahead
    /// of every live waiter) into the lock's queue.
    GhostWaiters {
        /// How often.
        period: Duration,
    },
    /// Every `period`, drop the replies to the next `first` batch script calls (coalesced
    /// acquires, releases and extends).
    DropBatchReplies {
        /// How many replies each time.
        first: usize,
        /// How often.
        period: Duration,
    },
    /// Every `period`, discard the next `first` pub/sub messages.
    DropMessages {
        /// How many messages each time.
        first: usize,
        /// How often.
        period: Duration,
    },
    /// Every `period`, hold the next `first` renewal calls (`renew.lua`) in the proxy for
    /// `by` before they reach Redis.
    HoldRenewals {
        /// How many calls each time.
        first: usize,
        /// How long (longer than the claim window).
        by: Duration,
        /// How often.
        period: Duration,
    },
    /// After `after`, snapshot Redis (`SAVE`); `after` later, kill it and start it again
    /// from that snapshot (what was written since is rolled back).
    RollBack {
        /// Running time before the snapshot, and again before the restart.
        after: Duration,
    },
}

impl Scenario {
    /// Every scenario, in the table's order.
    pub const ALL: [Scenario; 20] = [
        Scenario::Baseline,
        Scenario::DroppedReplies,
        Scenario::LateReplies,
        Scenario::ConnectionResets,
        Scenario::PausedHolder,
        Scenario::RedisPaused,
        Scenario::RedisRestart,
        Scenario::CancelledAcquires,
        Scenario::RedisRestartAtOnce,
        Scenario::SnapshotRollback,
        Scenario::SentinelFailover,
        Scenario::SentinelFailoverAcked,
        Scenario::RedlockNodeRestart,
        Scenario::RedlockNodesPaused,
        Scenario::ClusterFailover,
        Scenario::ClusterSlotMigration,
        Scenario::GhostGrantees,
        Scenario::GrantMessagesLost,
        Scenario::ConfirmationsLate,
        Scenario::BatchRepliesLost,
    ];

    /// Where the scenario runs.
    pub fn topology(self) -> Topology {
        match self {
            Scenario::SentinelFailover => Topology::Sentinel { acks: false },
            Scenario::SentinelFailoverAcked => Topology::Sentinel { acks: true },
            Scenario::RedlockNodeRestart | Scenario::RedlockNodesPaused => Topology::RedLock,
            Scenario::ClusterFailover | Scenario::ClusterSlotMigration => Topology::Cluster,
            _ => Topology::Server,
        }
    }

    /// Whether `lock` runs in this scenario: every lock on one server, leasehold alone on
    /// the topologies (the naive locks speak to one server).
    pub fn applies_to(self, lock: LockKind) -> bool {
        self.topology() == Topology::Server || lock == LockKind::Leasehold
    }

    /// Whether leasehold may show overlapping holds here, inside a window its docs name
    /// (TORTURE.md): lock keys lost with the data (a restart at once without persistence,
    /// a rolled-back snapshot, a failover to a replica that missed a grant, a RedLock node
    /// restarted empty). Fencing tokens still refuse every stale write there.
    pub fn allows_overlaps(self) -> bool {
        matches!(
            self,
            Scenario::RedisRestartAtOnce
                | Scenario::SnapshotRollback
                | Scenario::SentinelFailover
                | Scenario::RedlockNodeRestart
        )
    }

    /// Whether leasehold's workers each have a client of their own (separate processes):
    /// where one waiter's fault (its lost message, its late confirmation) must not hold up
    /// the others, which share nothing with it but the server.
    pub fn client_per_worker(self) -> bool {
        matches!(
            self,
            Scenario::GrantMessagesLost | Scenario::ConfirmationsLate
        )
    }

    /// How many workers the scenario runs, if not the usual number.
    pub fn workers(self) -> Option<usize> {
        (self == Scenario::BatchRepliesLost).then_some(16)
    }

    /// How many locks the workers spread over (see `WorkPlan::names`).
    pub fn names(self) -> usize {
        if self == Scenario::BatchRepliesLost {
            4
        } else {
            1
        }
    }

    /// The scenario's name (the command line's and the table's).
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Baseline => "baseline",
            Scenario::DroppedReplies => "dropped-replies",
            Scenario::LateReplies => "late-replies",
            Scenario::ConnectionResets => "connection-resets",
            Scenario::PausedHolder => "paused-holder",
            Scenario::RedisPaused => "redis-paused",
            Scenario::RedisRestart => "redis-restart",
            Scenario::CancelledAcquires => "cancelled-acquires",
            Scenario::RedisRestartAtOnce => "redis-restart-at-once",
            Scenario::SnapshotRollback => "snapshot-rollback",
            Scenario::SentinelFailover => "sentinel-failover",
            Scenario::SentinelFailoverAcked => "sentinel-failover-acked",
            Scenario::RedlockNodeRestart => "redlock-node-restart",
            Scenario::RedlockNodesPaused => "redlock-nodes-paused",
            Scenario::ClusterFailover => "cluster-failover",
            Scenario::ClusterSlotMigration => "cluster-slot-migration",
            Scenario::GhostGrantees => "ghost-grantees",
            Scenario::GrantMessagesLost => "grant-messages-lost",
            Scenario::ConfirmationsLate => "confirmations-late",
            Scenario::BatchRepliesLost => "batch-replies-lost",
        }
    }

    /// The faults the scenario injects (the cells' lease is 400 ms).
    pub fn faults(self) -> &'static [Fault] {
        match self {
            Scenario::Baseline => &[],
            Scenario::DroppedReplies => {
                const F: &[Fault] = &[Fault::DropWriteReplies {
                    first: 1,
                    period: Duration::from_millis(50),
                }];
                F
            }
            Scenario::LateReplies => {
                const F: &[Fault] = &[Fault::DelayWriteReplies {
                    first: 8,
                    by: Duration::from_millis(250),
                    period: Duration::from_millis(400),
                }];
                F
            }
            Scenario::ConnectionResets => {
                const F: &[Fault] = &[Fault::ResetConnections {
                    period: Duration::from_millis(200),
                }];
                F
            }
            Scenario::PausedHolder => {
                const F: &[Fault] = &[Fault::PauseHolders {
                    every: 3,
                    pause: Duration::from_millis(800),
                }];
                F
            }
            Scenario::RedisPaused => {
                const F: &[Fault] = &[Fault::PauseRedis {
                    after: Duration::from_millis(300),
                    pause: Duration::from_millis(800),
                }];
                F
            }
            Scenario::RedisRestart => {
                const F: &[Fault] = &[Fault::RestartRedis {
                    after: Duration::from_millis(700),
                    down: Duration::from_millis(500),
                }];
                F
            }
            Scenario::CancelledAcquires => {
                const F: &[Fault] = &[Fault::CancelAcquires {
                    within: Duration::from_millis(3),
                }];
                F
            }
            Scenario::RedisRestartAtOnce => {
                const F: &[Fault] = &[Fault::RestartRedis {
                    after: Duration::from_millis(700),
                    down: Duration::ZERO,
                }];
                F
            }
            Scenario::SnapshotRollback => {
                const F: &[Fault] = &[Fault::RollBack {
                    after: Duration::from_millis(500),
                }];
                F
            }
            Scenario::GhostGrantees => {
                const F: &[Fault] = &[Fault::GhostWaiters {
                    period: Duration::from_millis(400),
                }];
                F
            }
            Scenario::GrantMessagesLost => {
                const F: &[Fault] = &[Fault::DropMessages {
                    first: 1,
                    period: Duration::from_millis(100),
                }];
                F
            }
            Scenario::ConfirmationsLate => {
                // Holders also work past the claim window (every second hold pauses for
                // 300 ms, within the 400 ms lease): a holder made so by a release must be
                // told its grant lapsed, as its confirmation came too late.
                const F: &[Fault] = &[
                    Fault::HoldRenewals {
                        first: 2,
                        by: Duration::from_millis(400),
                        period: Duration::from_millis(300),
                    },
                    Fault::PauseHolders {
                        every: 2,
                        pause: Duration::from_millis(300),
                    },
                ];
                F
            }
            Scenario::BatchRepliesLost => {
                const F: &[Fault] = &[Fault::DropBatchReplies {
                    first: 1,
                    period: Duration::from_millis(50),
                }];
                F
            }
            // The topology scenarios' faults are the topology's own (torture/topology.rs).
            _ => &[],
        }
    }

    /// The holder pauses of the scenario, if any: `(every n-th hold, for how long)`.
    pub fn holder_pauses(self) -> Option<(usize, Duration)> {
        self.faults().iter().find_map(|f| match f {
            Fault::PauseHolders { every, pause } => Some((*every, *pause)),
            _ => None,
        })
    }

    /// How soon the scenario cancels acquires, if it does.
    pub fn acquire_cancellation(self) -> Option<Duration> {
        self.faults().iter().find_map(|f| match f {
            Fault::CancelAcquires { within } => Some(*within),
            _ => None,
        })
    }
}

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A lock under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum LockKind {
    /// leasehold itself.
    Leasehold,
    /// `SETNX` then `EXPIRE`, `DEL` to unlock (seed 000).
    SetnxExpire,
    /// `GETSET` timestamps with a `DEL` unlock (seed 002).
    Getset,
    /// `SET NX PX` without renewal or fencing (seed 003).
    NoRenewal,
    /// `SET NX PX` retried after a timeout (seed 004).
    RetryOnTimeout,
}

impl LockKind {
    /// Every lock, in the table's order.
    pub const ALL: [LockKind; 5] = [
        LockKind::Leasehold,
        LockKind::SetnxExpire,
        LockKind::Getset,
        LockKind::NoRenewal,
        LockKind::RetryOnTimeout,
    ];

    /// The lock's name (the command line's and the table's).
    pub fn name(self) -> &'static str {
        match self {
            LockKind::Leasehold => "leasehold",
            LockKind::SetnxExpire => "setnx-expire",
            LockKind::Getset => "getset",
            LockKind::NoRenewal => "no-renewal",
            LockKind::RetryOnTimeout => "retry-on-timeout",
        }
    }
}

impl std::fmt::Display for LockKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn every_scenario_and_lock_name_is_its_command_line_value() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::from_str(s.name(), false), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.name());
        }
        for l in LockKind::ALL {
            assert_eq!(LockKind::from_str(l.name(), false), Ok(l));
            assert_eq!(serde_json::to_value(l).unwrap(), l.name());
        }
        assert_eq!(Scenario::value_variants().len(), Scenario::ALL.len());
        assert_eq!(LockKind::value_variants().len(), LockKind::ALL.len());
    }

    #[test]
    fn the_naive_locks_run_only_on_one_server_and_overlaps_are_allowed_only_where_keys_are_lost() {
        for s in Scenario::ALL {
            for l in LockKind::ALL {
                assert_eq!(
                    s.applies_to(l),
                    s.topology() == Topology::Server || l == LockKind::Leasehold,
                    "{s} {l}"
                );
            }
        }
        assert!(!Scenario::SentinelFailoverAcked.allows_overlaps());
        assert!(Scenario::SentinelFailover.allows_overlaps());
        assert!(
            !Scenario::RedisRestart.allows_overlaps(),
            "the delayed restart"
        );
    }

    #[test]
    fn only_the_pause_and_cancel_scenarios_change_the_workers_plan() {
        for s in Scenario::ALL {
            assert_eq!(
                s.holder_pauses().is_some(),
                matches!(s, Scenario::PausedHolder | Scenario::ConfirmationsLate),
                "{s}"
            );
            assert_eq!(
                s.acquire_cancellation().is_some(),
                s == Scenario::CancelledAcquires,
                "{s}"
            );
        }
    }
}
