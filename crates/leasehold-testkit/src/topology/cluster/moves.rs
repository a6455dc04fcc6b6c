//! Moving slots of a [`RedisCluster`]: replicas added to a master, a manual failover
//! (`CLUSTER FAILOVER`) and a slot migration (`SETSLOT` + `MIGRATE`), each returning only
//! once every node agrees on the new slot map, which [`RedisCluster::node_for_slot`] then
//! answers from.
//!
//! Invariants: node indexes never change (a replica is appended, and keeps its index when
//! it is promoted); these calls block the calling thread (run them on a blocking thread
//! from async tests) and poll with deadlines, never a fixed sleep. Nodes added here
//! announce their own port, so they are not for a [`RedisCluster::proxied`] cluster.

use std::io;
use std::time::Duration;

use super::{agreed_map, owners, start_node, RedisCluster, SlotRange};
use crate::poll_until;
use crate::topology::{info_field, Probe, SLOT_COUNT};

/// How long a replica may take to join and sync, a failover to complete, or a slot move
/// to reach every node.
const MOVE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one `CLUSTER FAILOVER` may take before it is asked for again (a manual
/// failover expires after a few node timeouts).
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(10);
const FAILOVER_ATTEMPTS: usize = 3;

impl RedisCluster {
    /// Starts a new node and makes it a replica of node `master`; returns its index once
    /// it is in sync and every node knows it.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `master` is not a node index; `TimedOut` if the replica does not
    /// join or sync within 30 s; any error a node returns. All but `InvalidInput` include
    /// the nodes' logs.
    pub fn add_replica(&mut self, master: usize) -> io::Result<usize> {
        let master_url = self.node_url(master)?;
        let node = start_node(None)?;
        let replica_url = node.url();
        self.nodes.push(node);
        let index = self.nodes.len() - 1;
        let result = (|| {
            let mut at_master = Probe::new(master_url);
            let mut at_replica = Probe::new(replica_url);
            let master_id: String = at_master.query(redis::cmd("CLUSTER").arg("MYID"))?;
            let bus_port = super::bus_port_of(&mut at_master)?;
            let port = self.nodes[master].port();
            at_replica.query::<()>(
                redis::cmd("CLUSTER")
                    .arg("MEET")
                    .arg("127.0.0.1")
                    .arg(port)
                    .arg(bus_port),
            )?;
            let mut last = String::new();
            let mut following = false;
            let synced = poll_until(MOVE_TIMEOUT, || {
                // The replica must have learnt the master's id before it can follow it;
                // once it follows, asking again would restart the sync.
                if !following {
                    let replicate = redis::cmd("CLUSTER")
                        .arg("REPLICATE")
                        .arg(&master_id)
                        .clone();
                    if let Err(why) = at_replica.query::<()>(&replicate) {
                        last = format!("CLUSTER REPLICATE: {why}");
                        return false;
                    }
                    following = true;
                }
                let info = at_replica.info("replication").unwrap_or_default();
                let up = info_field(&info, "master_link_status") == Some("up")
                    && info_field(&info, "master_sync_in_progress") == Some("0");
                if !up {
                    last = format!("replica not in sync: {info}");
                }
                up
            });
            if !synced {
                return Err(format!(
                    "the new replica did not sync within {MOVE_TIMEOUT:?}; last: {last}"
                ));
            }
            // Every node must know it as that master's replica, or a failover it asks for
            // is refused ("I don't know its master").
            let replica_id: String = at_replica.query(redis::cmd("CLUSTER").arg("MYID"))?;
            let mut probes: Vec<Probe> = self.nodes.iter().map(|n| Probe::new(n.url())).collect();
            let known_everywhere = poll_until(MOVE_TIMEOUT, || {
                probes
                    .iter_mut()
                    .all(|probe| knows_replica(probe, &replica_id, &master_id))
            });
            if !known_everywhere {
                return Err(format!(
                    "not every node learnt the new replica within {MOVE_TIMEOUT:?}"
                ));
            }
            Ok(())
        })();
        result.map_err(|why| self.with_logs(io::Error::other(why)))?;
        self.agree_on(|_| true)?;
        Ok(index)
    }

    /// Promotes replica `replica` with `CLUSTER FAILOVER` (its master agrees and hands
    /// over); returns once every node names it as the owner of its master's slots.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `replica` is not a node index; `TimedOut` if the failover does not
    /// complete within 30 s; any error a node returns.
    pub fn failover(&mut self, replica: usize) -> io::Result<()> {
        let url = self.node_url(replica)?;
        let port = self.nodes[replica].port();
        let mut probe = Probe::new(url);
        // A manual failover that is not voted in time expires (the log says so); ask again.
        let mut last = None;
        for _ in 0..FAILOVER_ATTEMPTS {
            probe
                .query::<()>(redis::cmd("CLUSTER").arg("FAILOVER"))
                .map_err(|why| {
                    self.with_logs(io::Error::other(format!("CLUSTER FAILOVER: {why}")))
                })?;
            let promoted = |ranges: &[SlotRange]| ranges.iter().any(|r| r.port == port);
            match self.agree_on_within(FAILOVER_TIMEOUT, promoted) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no failover attempted")))
    }

    /// Migrates `slot` (with its keys) to node `to`, which must be a master; returns once
    /// every node names `to` as its owner.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a slot above 16383 or a bad node index; `TimedOut` if the nodes
    /// do not agree within 30 s; any error a node returns (`to` a replica, say).
    pub fn move_slot(&mut self, slot: u16, to: usize) -> io::Result<()> {
        if slot >= SLOT_COUNT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("slot {slot} is not below {SLOT_COUNT}"),
            ));
        }
        let from = self.owner[usize::from(slot)];
        let to_url = self.node_url(to)?;
        if from == to {
            return Ok(());
        }
        let mut source = Probe::new(self.nodes[from].url());
        let mut target = Probe::new(to_url);
        let to_port = self.nodes[to].port();
        let result = (|| {
            let source_id: String = source.query(redis::cmd("CLUSTER").arg("MYID"))?;
            let target_id: String = target.query(redis::cmd("CLUSTER").arg("MYID"))?;
            let setslot = |state: &str, id: &str| {
                let mut cmd = redis::cmd("CLUSTER");
                cmd.arg("SETSLOT").arg(slot).arg(state).arg(id);
                cmd
            };
            target.query::<()>(&setslot("IMPORTING", &source_id))?;
            source.query::<()>(&setslot("MIGRATING", &target_id))?;
            // Bounded: a slot holds finitely many keys and each pass moves up to 100.
            for _ in 0..100_000 {
                let keys: Vec<Vec<u8>> = source.query(
                    redis::cmd("CLUSTER")
                        .arg("GETKEYSINSLOT")
                        .arg(slot)
                        .arg(100),
                )?;
                if keys.is_empty() {
                    break;
                }
                let mut migrate = redis::cmd("MIGRATE");
                migrate
                    .arg("127.0.0.1")
                    .arg(to_port)
                    .arg("")
                    .arg(0)
                    .arg(5_000)
                    .arg("REPLACE")
                    .arg("KEYS")
                    .arg(keys);
                source.query::<()>(&migrate)?;
            }
            target.query::<()>(&setslot("NODE", &target_id))?;
            source.query::<()>(&setslot("NODE", &target_id))?;
            for (i, node) in self.nodes.iter().enumerate() {
                if i != from && i != to {
                    // Replicas refuse SETSLOT; gossip tells them.
                    let _ = Probe::new(node.url()).query::<()>(&setslot("NODE", &target_id));
                }
            }
            Ok::<(), String>(())
        })();
        result.map_err(|why| {
            self.with_logs(io::Error::other(format!("moving slot {slot}: {why}")))
        })?;
        self.agree_on(|ranges| {
            ranges
                .iter()
                .any(|r| r.start <= slot && slot <= r.end && r.port == to_port)
        })
    }

    fn node_url(&self, i: usize) -> io::Result<String> {
        self.nodes
            .get(i)
            .map(crate::RedisServer::url)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("no cluster node {i} (there are {})", self.nodes.len()),
                )
            })
    }

    /// Polls until every node reports a healthy cluster and the same slot map, and
    /// `wanted` accepts it; then records it.
    fn agree_on(&mut self, wanted: impl Fn(&[SlotRange]) -> bool) -> io::Result<()> {
        self.agree_on_within(MOVE_TIMEOUT, wanted)
    }

    fn agree_on_within(
        &mut self,
        limit: Duration,
        wanted: impl Fn(&[SlotRange]) -> bool,
    ) -> io::Result<()> {
        let map = agreed_map(&self.nodes, limit, wanted)?;
        self.owner = owners(&self.nodes, &map)?;
        Ok(())
    }
}

/// Whether `probe`'s node lists `replica` as a replica of `master` (`CLUSTER NODES`).
fn knows_replica(probe: &mut Probe, replica: &str, master: &str) -> bool {
    let nodes: String = probe
        .query(redis::cmd("CLUSTER").arg("NODES"))
        .unwrap_or_default();
    nodes.lines().any(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        fields.first() == Some(&replica)
            && fields.get(2).is_some_and(|flags| flags.contains("slave"))
            && fields.get(3) == Some(&master)
    })
}
