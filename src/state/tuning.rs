//! The settings of a node's own config that decide *when* a failover happens: how each site is
//! probed, and each group's hold-down, block after a failover and in-sync window. They are not
//! part of what a group is (its `GroupSpec`), and the leader acts on its own config's; so the
//! leader registers them with the topology, and a node whose config differs says so (once it
//! leads, the cluster would decide on different timings without anyone having changed them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{duration, Config};
use crate::ids::{GroupId, SiteId};

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Tuning {
    pub sites: BTreeMap<SiteId, SiteTuning>,
    pub groups: BTreeMap<GroupId, GroupTuning>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteTuning {
    pub probe_interval_ms: u64,
    pub probe_timeout_ms: u64,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupTuning {
    pub hold_down_ms: u64,
    pub block_after_failover_ms: u64,
    /// Groups with agents only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_sync_within_ms: Option<u64>,
}

impl Tuning {
    pub fn from_config(config: &Config) -> Tuning {
        let ms = |d: std::time::Duration| d.as_millis() as u64;
        Tuning {
            sites: config
                .sites
                .iter()
                .map(|s| {
                    let tuning = SiteTuning {
                        probe_interval_ms: ms(s.probe_interval),
                        probe_timeout_ms: ms(s.probe_timeout),
                        failure_threshold: s.failure_threshold,
                        success_threshold: s.success_threshold,
                    };
                    (SiteId::from(&s.name), tuning)
                })
                .collect(),
            groups: config
                .groups
                .iter()
                .map(|g| {
                    let tuning = GroupTuning {
                        hold_down_ms: ms(g.hold_down),
                        block_after_failover_ms: ms(g.block_after_failover),
                        in_sync_within_ms: g.agents.map(|a| ms(a.in_sync_within)),
                    };
                    (GroupId::from(&g.name), tuning)
                })
                .collect(),
        }
    }

    /// Each setting where `self` differs from `other`, in words, each side's value followed by
    /// its word in `(ours, theirs)`: `group app: hold_down 5s here, 2s registered`. Sites and
    /// groups that exist on one side only are the topology's business, not this.
    pub fn differences(&self, other: &Tuning, (ours, theirs): (&str, &str)) -> Vec<String> {
        let d = |ms: u64| duration::format(std::time::Duration::from_millis(ms));
        let mut out = Vec::new();
        let mut differ = |what: String, field: &str, here: String, there: String| {
            if here != there {
                out.push(format!("{what}: {field} {here} {ours}, {there} {theirs}"));
            }
        };
        for (site, here) in &self.sites {
            let Some(there) = other.sites.get(site) else { continue };
            let what = format!("site {site}");
            differ(what.clone(), "probe_interval", d(here.probe_interval_ms), d(there.probe_interval_ms));
            differ(what.clone(), "probe_timeout", d(here.probe_timeout_ms), d(there.probe_timeout_ms));
            let (f, g) = (here.failure_threshold, there.failure_threshold);
            differ(what.clone(), "failure_threshold", f.to_string(), g.to_string());
            let (f, g) = (here.success_threshold, there.success_threshold);
            differ(what, "success_threshold", f.to_string(), g.to_string());
        }
        for (group, here) in &self.groups {
            let Some(there) = other.groups.get(group) else { continue };
            let what = format!("group {group}");
            differ(what.clone(), "hold_down", d(here.hold_down_ms), d(there.hold_down_ms));
            let (a, b) = (here.block_after_failover_ms, there.block_after_failover_ms);
            differ(what.clone(), "block_after_failover", d(a), d(b));
            let opt = |v: Option<u64>| v.map_or("unset".to_string(), d);
            differ(what, "in_sync_within", opt(here.in_sync_within_ms), opt(there.in_sync_within_ms));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_differing_setting_is_named_with_both_values() {
        let site =
            SiteTuning { probe_interval_ms: 1000, probe_timeout_ms: 500, failure_threshold: 3, success_threshold: 2 };
        let group =
            GroupTuning { hold_down_ms: 2000, block_after_failover_ms: 3_600_000, in_sync_within_ms: Some(2000) };
        let registered = Tuning { sites: [("east".into(), site)].into(), groups: [("app".into(), group)].into() };
        let words = ("here", "registered");
        assert!(registered.differences(&registered, words).is_empty());
        let mine = Tuning {
            sites: [("east".into(), SiteTuning { probe_timeout_ms: 250, failure_threshold: 5, ..site })].into(),
            groups: [("app".into(), GroupTuning { hold_down_ms: 5000, in_sync_within_ms: None, ..group })].into(),
        };
        assert_eq!(
            mine.differences(&registered, words),
            [
                "site east: probe_timeout 250ms here, 500ms registered",
                "site east: failure_threshold 5 here, 3 registered",
                "group app: hold_down 5s here, 2s registered",
                "group app: in_sync_within unset here, 2s registered",
            ]
        );
    }
}
