//! Faults as data: a [`Rule`] pairs a [`Match`] on a command's arguments with
//! a [`Verdict`] for that command's reply ([`Rule::reply_to`]) or for the
//! command itself ([`Rule::command_to`]), optionally for only the first N
//! matching commands.
//!
//! Invariants: rules are checked in insertion order and the first active rule
//! that matches claims the command, whichever side its verdict acts on (so a
//! command gets at most one verdict); claiming decrements the rule's remaining
//! count atomically, so with concurrent connections a `first(n)` rule claims
//! exactly `n` commands. A rule is active from [`FaultProxy::add_rule`] until
//! its [`RuleGuard`] is dropped; a verdict already assigned to a command in
//! flight still applies after that. A [`RuleBuilder`] only produces verdicts
//! for its own side: a command rule never touches a reply, and a reply rule
//! never holds a command.
//!
//! [`FaultProxy::add_rule`]: super::FaultProxy::add_rule

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
    time::Duration,
};

/// What happens to a command claimed by a rule. Every verdict except
/// [`HoldCommand`](Verdict::HoldCommand) acts on the command's reply and
/// delivers the command itself at once; `HoldCommand` delays the command and
/// lets its reply pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the reply unchanged.
    Pass,
    /// Hold the reply for this long (from its arrival at the proxy) before
    /// forwarding it; later replies on the same connection queue behind it,
    /// as they would on a slow TCP path.
    Delay(Duration),
    /// Discard the reply silently; the connection stays open, so the client
    /// only learns of it by timing out.
    Drop,
    /// Instead of delivering the reply, close the client connection with a
    /// TCP RST, and close the upstream connection too.
    Reset,
    /// Hold the command's bytes in the proxy for this long (from their
    /// arrival at the proxy) before writing them to the server, as if the
    /// command were still in the network. Later commands on the same client
    /// connection queue behind it (TCP order is kept), while replies to
    /// earlier commands keep flowing. The reply, once the server sends it,
    /// passes unchanged.
    ///
    /// If the proxy sees the server close the connection (e.g. `CLIENT KILL`,
    /// a restart) before the hold ends, even after the client has closed its
    /// side, the held command — and everything
    /// queued behind it — is discarded, never delivered, and the proxy
    /// closes the client connection too. If the client closes its connection
    /// while a command is held, the held command and the commands behind it
    /// are still delivered when the hold ends, and only then is the server
    /// connection closed, as a kernel flushes a closed socket's send buffer.
    /// [`FaultProxy::reset_all`](super::FaultProxy::reset_all), a
    /// [`Reset`](Verdict::Reset) on an earlier reply, or dropping the proxy
    /// discards held commands.
    HoldCommand(Duration),
}

impl Verdict {
    /// Whether the verdict acts on the command rather than on its reply.
    fn acts_on_command(self) -> bool {
        matches!(self, Verdict::HoldCommand(_))
    }
}

/// A predicate on a command's arguments (`args[0]` is the command name).
#[derive(Clone)]
pub struct Match(Predicate);

/// A custom predicate on a command's arguments, for [`Match::custom`].
pub type CommandPredicate = dyn Fn(&[Vec<u8>]) -> bool + Send + Sync;

#[derive(Clone)]
enum Predicate {
    Any,
    Command(Vec<u8>),
    ArgContains(Vec<u8>),
    Custom(Arc<CommandPredicate>),
    All(Vec<Match>),
}

impl Match {
    /// Every command, including the handshake clients send on connect
    /// (`AUTH`, `HELLO`, `SELECT`, `CLIENT SETINFO`); prefer a narrower match
    /// unless the fault should hit those too.
    pub fn any() -> Self {
        Self(Predicate::Any)
    }

    /// Commands whose name (first argument) equals `name`, ignoring ASCII case.
    pub fn command(name: impl AsRef<[u8]>) -> Self {
        Self(Predicate::Command(name.as_ref().to_vec()))
    }

    /// Commands with any argument (the name included) containing `needle`.
    pub fn arg_contains(needle: impl AsRef<[u8]>) -> Self {
        Self(Predicate::ArgContains(needle.as_ref().to_vec()))
    }

    /// Commands for which `predicate(args)` is true. It runs on the proxy's
    /// connection task for every command, so it must be quick and must not
    /// block or call back into the proxy.
    pub fn custom(predicate: Arc<CommandPredicate>) -> Self {
        Self(Predicate::Custom(predicate))
    }

    /// Commands matched by both `self` and `other`.
    pub fn and(self, other: Match) -> Self {
        match self.0 {
            Predicate::All(mut all) => {
                all.push(other);
                Self(Predicate::All(all))
            }
            predicate => Self(Predicate::All(vec![Self(predicate), other])),
        }
    }

    /// Whether the command with these arguments matches.
    pub fn matches(&self, args: &[Vec<u8>]) -> bool {
        match &self.0 {
            Predicate::Any => true,
            Predicate::Command(name) => args
                .first()
                .is_some_and(|first| first.eq_ignore_ascii_case(name)),
            Predicate::ArgContains(needle) => args.iter().any(|arg| contains(arg, needle)),
            Predicate::Custom(predicate) => predicate(args),
            Predicate::All(all) => all.iter().all(|each| each.matches(args)),
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

impl fmt::Debug for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Predicate::Any => f.write_str("Match::any()"),
            Predicate::Command(name) => {
                write!(f, "Match::command({:?})", String::from_utf8_lossy(name))
            }
            Predicate::ArgContains(needle) => {
                write!(
                    f,
                    "Match::arg_contains({:?})",
                    String::from_utf8_lossy(needle)
                )
            }
            Predicate::Custom(_) => f.write_str("Match::custom(..)"),
            Predicate::All(all) => f.debug_list().entries(all).finish(),
        }
    }
}

/// A fault: the [`Verdict`] for commands that [`Match`] (for their replies,
/// or for the commands themselves with [`Verdict::HoldCommand`]), applied to
/// the first `limit` of them (all of them if `None`), after which the rule is
/// inert.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Which commands the rule claims.
    pub matcher: Match,
    /// What happens to a claimed command or its reply.
    pub verdict: Verdict,
    /// How many commands the rule claims before it becomes inert.
    pub limit: Option<usize>,
}

impl Rule {
    /// Starts a rule for the replies to commands matching `matcher`.
    pub fn reply_to(matcher: Match) -> RuleBuilder {
        RuleBuilder {
            matcher,
            limit: None,
            side: Side::Reply,
        }
    }

    /// Starts a rule for the delivery of commands matching `matcher` to the
    /// server: `Rule::command_to(m).first(n).delay(d)` holds each claimed
    /// command for `d` before the proxy writes it upstream (see
    /// [`Verdict::HoldCommand`]). Only [`delay`](RuleBuilder::delay) and
    /// [`pass`](RuleBuilder::pass) apply to commands.
    pub fn command_to(matcher: Match) -> RuleBuilder {
        RuleBuilder {
            matcher,
            limit: None,
            side: Side::Command,
        }
    }
}

/// What a [`RuleBuilder`]'s verdicts act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Reply,
    Command,
}

/// Builds a [`Rule`]: `Rule::reply_to(m).first(n).delay(d)` or
/// `Rule::command_to(m).first(n).delay(d)`.
#[derive(Debug, Clone)]
#[must_use = "a RuleBuilder does nothing until a verdict turns it into a Rule"]
pub struct RuleBuilder {
    matcher: Match,
    limit: Option<usize>,
    side: Side,
}

impl RuleBuilder {
    /// Applies the rule to the first `n` matching commands only.
    pub fn first(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// Commands and replies pass unchanged (useful to shield commands from
    /// later rules).
    pub fn pass(self) -> Rule {
        self.verdict(Verdict::Pass)
    }

    /// For [`Rule::reply_to`], replies are held for `delay` before being
    /// forwarded ([`Verdict::Delay`]); for [`Rule::command_to`], commands are
    /// held for `delay` before being delivered to the server
    /// ([`Verdict::HoldCommand`]).
    pub fn delay(self, delay: Duration) -> Rule {
        let verdict = match self.side {
            Side::Reply => Verdict::Delay(delay),
            Side::Command => Verdict::HoldCommand(delay),
        };
        self.verdict(verdict)
    }

    /// Replies are discarded; the connection stays open.
    ///
    /// # Panics
    ///
    /// On a [`Rule::command_to`] builder: commands cannot be dropped.
    pub fn drop(self) -> Rule {
        self.verdict(Verdict::Drop)
    }

    /// The connection is reset instead of delivering the reply.
    ///
    /// # Panics
    ///
    /// On a [`Rule::command_to`] builder: only replies trigger resets.
    pub fn reset(self) -> Rule {
        self.verdict(Verdict::Reset)
    }

    /// The rule with an explicit verdict.
    ///
    /// # Panics
    ///
    /// If the verdict acts on the other side than the builder: a
    /// [`Rule::command_to`] builder accepts only [`Verdict::Pass`] and
    /// [`Verdict::HoldCommand`], a [`Rule::reply_to`] builder anything but
    /// [`Verdict::HoldCommand`].
    pub fn verdict(self, verdict: Verdict) -> Rule {
        let fits = match self.side {
            Side::Reply => !verdict.acts_on_command(),
            Side::Command => verdict == Verdict::Pass || verdict.acts_on_command(),
        };
        assert!(
            fits,
            "{verdict:?} does not act on what a {} rule targets",
            match self.side {
                Side::Reply => "Rule::reply_to",
                Side::Command => "Rule::command_to",
            }
        );
        Rule {
            matcher: self.matcher,
            verdict,
            limit: self.limit,
        }
    }
}

/// A rule installed in a proxy, with its counters.
#[derive(Debug)]
pub(crate) struct ActiveRule {
    id: u64,
    rule: Rule,
    remaining: Option<AtomicUsize>,
    hits: AtomicUsize,
}

impl ActiveRule {
    /// Claims one command if the rule still has budget.
    fn try_claim(&self) -> bool {
        let claimed = match &self.remaining {
            None => true,
            Some(remaining) => remaining
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                    left.checked_sub(1)
                })
                .is_ok(),
        };
        if claimed {
            self.hits.fetch_add(1, Ordering::AcqRel);
        }
        claimed
    }
}

/// The ordered rules of one proxy.
#[derive(Debug, Default)]
pub(crate) struct RuleSet {
    next_id: AtomicU64,
    rules: Mutex<Vec<Arc<ActiveRule>>>,
}

impl RuleSet {
    fn lock(&self) -> MutexGuard<'_, Vec<Arc<ActiveRule>>> {
        self.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Installs `rule` after the existing ones.
    pub(crate) fn add(self: &Arc<Self>, rule: Rule) -> RuleGuard {
        let active = Arc::new(ActiveRule {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            remaining: rule.limit.map(AtomicUsize::new),
            rule,
            hits: AtomicUsize::new(0),
        });
        self.lock().push(Arc::clone(&active));
        RuleGuard {
            rules: Arc::clone(self),
            rule: active,
        }
    }

    /// The verdict for a command: the first active matching rule claims it.
    pub(crate) fn claim(&self, args: &[Vec<u8>]) -> Verdict {
        let snapshot: Vec<Arc<ActiveRule>> = {
            let rules = self.lock();
            if rules.is_empty() {
                return Verdict::Pass;
            }
            rules.clone()
        };
        snapshot
            .iter()
            .find(|active| active.rule.matcher.matches(args) && active.try_claim())
            .map_or(Verdict::Pass, |active| active.rule.verdict)
    }

    fn remove(&self, id: u64) {
        self.lock().retain(|active| active.id != id);
    }
}

/// Keeps a rule installed; dropping it removes the rule.
#[must_use = "the rule is removed when the guard is dropped"]
#[derive(Debug)]
pub struct RuleGuard {
    rules: Arc<RuleSet>,
    rule: Arc<ActiveRule>,
}

impl RuleGuard {
    /// How many commands the rule has claimed so far.
    pub fn hits(&self) -> usize {
        self.rule.hits.load(Ordering::Acquire)
    }

    /// The rule as installed.
    pub fn rule(&self) -> &Rule {
        &self.rule.rule
    }
}

impl Drop for RuleGuard {
    fn drop(&mut self) {
        self.rules.remove(self.rule.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|word| word.as_bytes().to_vec()).collect()
    }

    #[test]
    fn matchers_match_what_their_names_say() {
        let set = args(&["set", "lock:{a}", "token-1"]);
        assert!(Match::any().matches(&set));
        assert!(Match::command("SET").matches(&set));
        assert!(!Match::command("SETNX").matches(&set));
        assert!(Match::arg_contains(b"{a}").matches(&set));
        assert!(!Match::arg_contains(b"{b}").matches(&set));
        assert!(Match::custom(Arc::new(|args: &[Vec<u8>]| args.len() == 3)).matches(&set));
        assert!(Match::command("set")
            .and(Match::arg_contains("token"))
            .matches(&set));
        assert!(!Match::command("get")
            .and(Match::arg_contains("token"))
            .matches(&set));
        assert!(!Match::command("SET").matches(&[]));
    }

    #[test]
    fn first_matching_rule_wins_and_limits_are_counted() {
        let rules = Arc::new(RuleSet::default());
        let limited = rules.add(Rule::reply_to(Match::command("GET")).first(2).drop());
        let fallback = rules.add(Rule::reply_to(Match::any()).reset());
        let get = args(&["GET", "k"]);
        assert_eq!(rules.claim(&get), Verdict::Drop);
        assert_eq!(rules.claim(&get), Verdict::Drop);
        assert_eq!(rules.claim(&get), Verdict::Reset);
        assert_eq!(limited.hits(), 2);
        assert_eq!(fallback.hits(), 1);
        drop(fallback);
        assert_eq!(rules.claim(&get), Verdict::Pass);
        drop(limited);
        assert!(rules.lock().is_empty());
    }

    #[test]
    fn delay_acts_on_the_side_the_builder_targets() {
        let second = Duration::from_secs(1);
        let command = Rule::command_to(Match::command("SET"))
            .first(2)
            .delay(second);
        assert_eq!(command.verdict, Verdict::HoldCommand(second));
        assert_eq!(command.limit, Some(2));
        let reply = Rule::reply_to(Match::command("SET")).delay(second);
        assert_eq!(reply.verdict, Verdict::Delay(second));
        assert_eq!(Rule::command_to(Match::any()).pass().verdict, Verdict::Pass);

        let rules = Arc::new(RuleSet::default());
        let held = rules.add(command);
        let set = args(&["SET", "k", "v"]);
        assert_eq!(rules.claim(&set), Verdict::HoldCommand(second));
        assert_eq!(rules.claim(&set), Verdict::HoldCommand(second));
        assert_eq!(rules.claim(&set), Verdict::Pass);
        assert_eq!(held.hits(), 2);
    }

    #[test]
    #[should_panic(expected = "Rule::command_to")]
    fn command_rules_cannot_drop_commands() {
        let _ = Rule::command_to(Match::any()).drop();
    }

    #[test]
    #[should_panic(expected = "Rule::command_to")]
    fn command_rules_cannot_reset() {
        let _ = Rule::command_to(Match::any()).reset();
    }

    #[test]
    #[should_panic(expected = "Rule::reply_to")]
    fn reply_rules_cannot_hold_commands() {
        let _ = Rule::reply_to(Match::any()).verdict(Verdict::HoldCommand(Duration::ZERO));
    }

    #[test]
    fn concurrent_claims_never_exceed_the_limit() {
        let rules = Arc::new(RuleSet::default());
        let guard = rules.add(Rule::reply_to(Match::any()).first(100).drop());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let rules = Arc::clone(&rules);
                std::thread::spawn(move || {
                    (0..100)
                        .filter(|_| rules.claim(&[b"PING".to_vec()]) == Verdict::Drop)
                        .count()
                })
            })
            .collect();
        let claimed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(claimed, 100);
        assert_eq!(guard.hits(), 100);
    }
}
