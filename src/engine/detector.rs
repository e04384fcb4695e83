//! One node's failure detector for one site: consecutive probe outcomes in, a verdict with
//! hysteresis out. A site is declared down after `failure_threshold` failures in a row and up
//! after `success_threshold` successes in a row; until the first declaration it is unknown.

use crate::state::Verdict;

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
}
