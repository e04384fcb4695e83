//! What one node makes of its probes. [`Detector`]: one site's consecutive probe outcomes in,
//! a verdict with hysteresis out (down after `failure_threshold` failures in a row, up after
//! `success_threshold` successes in a row, unknown until the first). [`Observer`]: every
//! site's detector, the staleness and resend rules that keep this node's committed verdicts
//! equal to what its detectors say, and when each site's current streak of failures began (the
//! detection time a failover records). Pure: `now` is passed in.
//!
//! Which sites a call of [`Observer::reports`] looks at is the observer's too: those probed
//! since the last call, those whose held-back report is due, and every site once per
//! [`SWEEP`]. Looking at every site after every round made the probing of n sites cost n² (at
//! a thousand sites with rounds every 150 ms, more than a core per node).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::state::{Command, NodeId, SiteId, State, Verdict};

/// A report the leader has not applied yet is sent again after this long, not sooner.
pub const REPORT_RETRY: Duration = Duration::from_secs(1);

/// Every site is looked at again at least this often, probed or not: that is how a verdict
/// gone stale (its rounds stopped), a site newly registered, and a committed verdict that
/// changed under this node are noticed.
pub const SWEEP: Duration = Duration::from_millis(500);

/// How one site is watched: its thresholds, and how long without a probe round makes its
/// verdict unknown (a prober that died must never leave a stale up or down behind).
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    pub failure_threshold: u32,
    pub success_threshold: u32,
    pub stale_after: Duration,
}

#[derive(Debug, Clone)]
struct Site {
    watch: Watch,
    detector: Detector,
    last_round: Duration,
    failing_since: Option<Duration>,
    last_sent: Option<Duration>,
}

impl Site {
    fn verdict(&self, now: Duration) -> Option<Verdict> {
        if now.saturating_sub(self.last_round) > self.watch.stale_after {
            return None;
        }
        self.detector.verdict()
    }
}

/// One node's view of every site, and the verdict reports it owes the log.
#[derive(Debug, Clone)]
pub struct Observer {
    node: NodeId,
    sites: BTreeMap<SiteId, Site>,
    /// Sites to look at again, and from when: probed ones at once, held-back ones when their
    /// [`REPORT_RETRY`] has passed.
    pending: BTreeMap<SiteId, Duration>,
    /// When every site was last looked at; `None` before the first call.
    swept: Option<Duration>,
}

impl Observer {
    pub fn new(node: NodeId, sites: impl IntoIterator<Item = (SiteId, Watch)>, now: Duration) -> Observer {
        let sites = sites
            .into_iter()
            .map(|(name, watch)| {
                let detector = Detector::new(watch.failure_threshold, watch.success_threshold);
                (name, Site { watch, detector, last_round: now, failing_since: None, last_sent: None })
            })
            .collect();
        Observer { node, sites, pending: BTreeMap::new(), swept: None }
    }

    /// One probe round of `site` ended, `ok` or not; returns the detector's new verdict when
    /// it changed.
    pub fn round(&mut self, site: &str, ok: bool, now: Duration) -> Option<Verdict> {
        let (name, _) = self.sites.get_key_value(site)?;
        self.pending.insert(name.clone(), now);
        let s = self.sites.get_mut(site)?;
        s.last_round = now;
        if ok {
            s.failing_since = None;
        } else {
            s.failing_since.get_or_insert(now);
        }
        s.detector.observe(ok)
    }

    /// This node's verdict on `site` now: unknown when its rounds stopped arriving.
    pub fn verdict(&self, site: &str, now: Duration) -> Option<Verdict> {
        self.sites.get(site)?.verdict(now)
    }

    pub fn sites(&self) -> impl Iterator<Item = &str> {
        self.sites.keys().map(SiteId::as_str)
    }

    /// The reports to propose so that the committed verdicts become this node's: one per
    /// registered site whose committed verdict differs, none for a site reported within
    /// [`REPORT_RETRY`] (that one is sent when the interval has passed: [`Observer::next_due`]).
    /// Looks at the sites probed since the last call and those whose held-back report is due,
    /// or at every site when a [`SWEEP`] is due.
    pub fn reports(&mut self, state: &State, now: Duration) -> Vec<Command> {
        let look: Vec<SiteId> = if self.swept.is_none_or(|at| now.saturating_sub(at) >= SWEEP) {
            self.swept = Some(now);
            self.pending.clear();
            self.sites.keys().cloned().collect()
        } else {
            let due: Vec<SiteId> = self.pending.iter().filter(|(_, at)| **at <= now).map(|(s, _)| s.clone()).collect();
            for site in &due {
                self.pending.remove(site);
            }
            due
        };
        look.into_iter().filter_map(|site| self.report(site, state, now)).collect()
    }

    /// The rule for one site: its report when the committed verdict differs from this node's,
    /// unless one went within [`REPORT_RETRY`]; then it is held back until then.
    fn report(&mut self, site: SiteId, state: &State, now: Duration) -> Option<Command> {
        let s = self.sites.get_mut(&site)?;
        let verdict = s.verdict(now);
        if !state.sites.contains(&site) || state.verdict(&site, self.node) == verdict {
            return None;
        }
        if let Some(at) = s.last_sent.filter(|at| now.saturating_sub(*at) < REPORT_RETRY) {
            self.pending.insert(site, at + REPORT_RETRY);
            return None;
        }
        s.last_sent = Some(now);
        Some(Command::ReportVerdict { node: self.node, site, verdict })
    }

    /// When [`Observer::reports`] has something to look at without a probe round: the next
    /// sweep, or a held-back report coming due sooner.
    pub fn next_due(&self) -> Duration {
        let sweep = self.swept.map_or(Duration::ZERO, |at| at + SWEEP);
        self.pending.values().copied().fold(sweep, Duration::min)
    }

    /// Per failing site, when its current streak of failed rounds began.
    pub fn failing_since(&self) -> BTreeMap<SiteId, Duration> {
        self.sites.iter().filter_map(|(name, s)| Some((name.clone(), s.failing_since?))).collect()
    }
}

#[derive(Debug, Clone)]
pub struct Detector {
    failure_threshold: u32,
    success_threshold: u32,
    failures: u32,
    successes: u32,
    verdict: Option<Verdict>,
}

impl Detector {
    pub fn new(failure_threshold: u32, success_threshold: u32) -> Detector {
        Detector {
            failure_threshold: failure_threshold.max(1),
            success_threshold: success_threshold.max(1),
            failures: 0,
            successes: 0,
            verdict: None,
        }
    }

    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict
    }

    /// Feeds one probe outcome; returns the new verdict when it changes.
    pub fn observe(&mut self, ok: bool) -> Option<Verdict> {
        let next = if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            (self.successes >= self.success_threshold).then_some(Verdict::Up)
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            (self.failures >= self.failure_threshold).then_some(Verdict::Down)
        };
        match next {
            Some(v) if self.verdict != Some(v) => {
                self.verdict = Some(v);
                Some(v)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(d: &mut Detector, outcomes: &str) -> Vec<Option<Verdict>> {
        outcomes.chars().map(|c| d.observe(c == '+')).collect()
    }

    #[test]
    fn declares_after_thresholds_and_only_on_change() {
        let mut d = Detector::new(3, 2);
        let up = Some(Verdict::Up);
        let down = Some(Verdict::Down);
        assert_eq!(feed(&mut d, "++"), vec![None, up]);
        assert_eq!(feed(&mut d, "+++"), vec![None, None, None]);
        assert_eq!(feed(&mut d, "--"), vec![None, None]);
        assert_eq!(d.verdict(), up, "two failures are below the threshold of three");
        assert_eq!(feed(&mut d, "-"), vec![down]);
        assert_eq!(feed(&mut d, "+-+-+-"), vec![None; 6], "flapping never reaches either threshold");
        assert_eq!(d.verdict(), down);
        assert_eq!(feed(&mut d, "++"), vec![None, up]);
    }

    #[test]
    fn starts_unknown_and_can_first_be_down() {
        let mut d = Detector::new(1, 5);
        assert_eq!(d.verdict(), None);
        assert_eq!(d.observe(false), Some(Verdict::Down));
    }

    fn observer() -> (Observer, State) {
        let watch = Watch { failure_threshold: 2, success_threshold: 1, stale_after: Duration::from_secs(3) };
        let o = Observer::new(NodeId(1), [("east".into(), watch)], Duration::ZERO);
        let mut state = State::default();
        state.sites.insert("east".into());
        (o, state)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn reports_what_the_log_lacks_once_per_retry_interval() {
        let (mut o, mut state) = observer();
        assert!(o.reports(&state, ms(0)).is_empty(), "unknown, and the log says nothing either");
        assert_eq!(o.round("east", true, ms(100)), Some(Verdict::Up));
        let up = Command::ReportVerdict { node: NodeId(1), site: "east".into(), verdict: Some(Verdict::Up) };
        assert_eq!(o.reports(&state, ms(100)), vec![up.clone()]);
        assert!(o.reports(&state, ms(1099)).is_empty(), "not again within the retry interval");
        assert_eq!(o.reports(&state, ms(1100)), vec![up.clone()], "again once it has passed");
        state.apply(up);
        assert!(o.reports(&state, ms(2500)).is_empty(), "the log has it");
        // Rounds stop arriving: the verdict turns unknown, and that is reported.
        let unknown = Command::ReportVerdict { node: NodeId(1), site: "east".into(), verdict: None };
        assert_eq!(o.verdict("east", ms(3100)), Some(Verdict::Up));
        assert_eq!(o.verdict("east", ms(3101)), None);
        assert_eq!(o.reports(&state, ms(3101)), vec![unknown]);
    }

    #[test]
    fn a_held_back_report_goes_the_moment_its_retry_interval_passes() {
        let (mut o, state) = observer();
        assert!(o.reports(&state, ms(0)).is_empty());
        o.round("east", true, ms(100));
        assert_eq!(o.reports(&state, ms(100)).len(), 1, "up");
        o.round("east", false, ms(200));
        assert_eq!(o.round("east", false, ms(300)), Some(Verdict::Down));
        assert!(o.reports(&state, ms(300)).is_empty(), "held back: up went at 100");
        assert_eq!(o.next_due(), ms(500), "the sweep comes first");
        assert!(o.reports(&state, ms(500)).is_empty(), "still held back at the sweep");
        assert_eq!(o.next_due(), ms(1000));
        assert!(o.reports(&state, ms(1000)).is_empty());
        // The sweep just went: the held-back report, not the next sweep, says when to wake.
        assert_eq!(o.next_due(), ms(1100));
        assert!(o.reports(&state, ms(1099)).is_empty());
        let down = Command::ReportVerdict { node: NodeId(1), site: "east".into(), verdict: Some(Verdict::Down) };
        assert_eq!(o.reports(&state, ms(1100)), vec![down], "due without a round or a sweep");
        assert_eq!(o.next_due(), ms(1500), "nothing held back any more");
    }

    #[test]
    fn a_round_looks_at_its_own_site_and_a_sweep_at_every_site() {
        let watch = Watch { failure_threshold: 1, success_threshold: 1, stale_after: Duration::from_secs(3) };
        let sites = [("east".into(), watch), ("west".into(), watch)];
        let mut o = Observer::new(NodeId(1), sites, Duration::ZERO);
        let mut state = State::default();
        state.sites.extend(["east".into(), "west".into()]);
        o.round("east", true, ms(10));
        o.round("west", true, ms(10));
        for command in o.reports(&state, ms(10)) {
            state.apply(command);
        }
        assert!(o.reports(&state, ms(1000)).is_empty(), "the log has both (a sweep)");
        // The log loses west's verdict (as when a report was never applied): west's own rounds
        // or the next sweep notice it, not a round of east.
        state.apply(Command::ReportVerdict { node: NodeId(1), site: "west".into(), verdict: None });
        o.round("east", true, ms(1100));
        assert!(o.reports(&state, ms(1100)).is_empty(), "a round of east looks at east alone");
        let west = Command::ReportVerdict { node: NodeId(1), site: "west".into(), verdict: Some(Verdict::Up) };
        assert_eq!(o.next_due(), ms(1500));
        assert_eq!(o.reports(&state, ms(1500)), vec![west]);
    }

    #[test]
    fn failing_since_is_the_start_of_the_current_streak() {
        let (mut o, _) = observer();
        o.round("east", false, ms(100));
        o.round("east", false, ms(350));
        assert_eq!(o.failing_since(), [("east".into(), ms(100))].into());
        o.round("east", true, ms(600));
        assert!(o.failing_since().is_empty());
        assert_eq!(o.round("nowhere", false, ms(700)), None, "an unknown site is ignored");
    }
}
