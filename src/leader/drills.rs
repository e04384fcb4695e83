//! When one leadership brings each drill back: a drill holding on the other site goes back
//! once its hold has passed on this leader's clock, counted from when this leadership first
//! saw it holding (a new leader starts the hold afresh, which can only make it longer). The
//! checks and the command are the `Leader`'s; this keeps the timers and that one proposal is
//! in flight at a time. Pure: `now` is passed in.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::state::{Epoch, GroupId, GroupState, State};

/// How long after its hold a drill may wait for its way back's checks to pass before it ends
/// failed, the group left where the drill took it.
pub const RETURN_PATIENCE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hold {
    id: Epoch,
    since: Duration,
    proposed: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Returns {
    holds: BTreeMap<GroupId, Hold>,
}

impl Returns {
    /// The drills whose hold is over at `now` and have no proposal in flight: each group, its
    /// drill's id, and whether the patience after the hold has run out too.
    pub fn due(&mut self, state: &State, now: Duration) -> Vec<(GroupId, Epoch, bool)> {
        let holding = |g: &GroupState| g.drill.as_ref().filter(|d| d.holding()).map(|d| (d.id, d.spec.hold_ms));
        self.holds.retain(|name, h| state.groups.get(name).and_then(holding).is_some_and(|(id, _)| id == h.id));
        let mut due = Vec::new();
        // Each group's drill read as the groups are walked, not searched for by name.
        for (name, g) in &state.groups {
            let Some((id, hold_ms)) = holding(g) else { continue };
            let hold = self.holds.entry(name.clone()).or_insert(Hold { id, since: now, proposed: false });
            let back_at = hold.since + Duration::from_millis(hold_ms);
            if !hold.proposed && now >= back_at {
                due.push((name.clone(), id, now >= back_at + RETURN_PATIENCE));
            }
        }
        due
    }

    /// A proposal for `group`'s drill is in flight.
    pub fn proposed(&mut self, group: &GroupId) {
        if let Some(h) = self.holds.get_mut(group) {
            h.proposed = true;
        }
    }

    /// It settled: taken effect, the drill no longer holds; otherwise the next look tries again.
    pub fn settled(&mut self, group: &GroupId) {
        if let Some(h) = self.holds.get_mut(group) {
            h.proposed = false;
        }
    }
}
