//! The mass failover's Route 53 half: a hosted zone `scale.test.` on a Route 53 API
//! (`scripts/bench-scale` starts moto for it), made and seeded by the benchmark with every
//! group's record (g0001.scale.test. ... A east's address), the `route53` step that moves each
//! group's own record, and the zone read back by the benchmark itself (its own listing, not the
//! step's) until every record holds west's address.

use std::path::{Path, PathBuf};

use aws_sdk_route53::types::{Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType};
use aws_sdk_route53::Client;

use crate::actions::route53;
use crate::config::Route53Step;

const ZONE: &str = "scale.test.";
const EAST: &str = "192.0.2.1";
const WEST: &str = "198.51.100.7";

pub(super) struct Zone {
    endpoint: String,
    id: String,
    credentials: PathBuf,
    client: Client,
}

impl Zone {
    /// The zone made on the API at `endpoint`, with `groups`' records pointing at east. The
    /// credentials file is for the nodes' steps (moto takes any).
    pub(super) async fn make(endpoint: &str, dir: &Path, groups: &[String]) -> anyhow::Result<Zone> {
        let credentials = dir.join("aws-credentials");
        std::fs::write(&credentials, "[default]\naws_access_key_id = bench\naws_secret_access_key = bench\n")?;
        let step = Route53Step {
            zone_id: String::new(),
            record: String::new(),
            record_type: "A".into(),
            ttl: 60,
            values: Default::default(),
            set_identifiers: Default::default(),
            weight: 100,
            endpoint: Some(endpoint.parse()?),
            region: "us-east-1".into(),
            profile: None,
            credentials_file: Some(credentials.clone()),
        };
        let client = route53::client(&step).await.map_err(|e| anyhow::anyhow!("route53 client: {e}"))?;
        let made = client.create_hosted_zone().name(ZONE).caller_reference(unique()).send().await?;
        let id = made.hosted_zone().map(|z| z.id().trim_start_matches("/hostedzone/").to_string()).unwrap_or_default();
        for chunk in groups.chunks(500) {
            let mut batch = ChangeBatch::builder();
            for g in chunk {
                batch = batch.changes(
                    Change::builder()
                        .action(ChangeAction::Create)
                        .resource_record_set(set(&record(g), EAST)?)
                        .build()?,
                );
            }
            client.change_resource_record_sets().hosted_zone_id(&id).change_batch(batch.build()?).send().await?;
        }
        Ok(Zone { endpoint: endpoint.to_string(), id, credentials, client })
    }

    /// The `route53` step moving `group`'s own record, as a group's config table.
    pub(super) fn step_config(&self, group: &str) -> String {
        format!(
            "[[group.step]]\nname = \"route53\"\nkind = \"route53\"\nzone_id = \"{}\"\nrecord = \"{}\"\ntype = \"A\"\n\
             ttl = 60\nvalues = {{ east = [\"{EAST}\"], west = [\"{WEST}\"] }}\nendpoint = \"{}\"\n\
             credentials_file = \"{}\"\n",
            self.id,
            record(group),
            self.endpoint,
            self.credentials.display()
        )
    }

    /// How many of `groups`' records hold west's address, read page by page.
    pub(super) async fn on_west(&self, groups: &[String]) -> anyhow::Result<usize> {
        let wanted: std::collections::BTreeSet<String> = groups.iter().map(|g| record(g)).collect();
        let mut moved = 0;
        let mut next: Option<(String, Option<RrType>)> = None;
        loop {
            let mut request = self.client.list_resource_record_sets().hosted_zone_id(&self.id).max_items(300);
            if let Some((name, rtype)) = next.take() {
                request = request.start_record_name(name).set_start_record_type(rtype);
            }
            let out = request.send().await?;
            moved += out
                .resource_record_sets()
                .iter()
                .filter(|s| s.r#type() == &RrType::A && wanted.contains(s.name()))
                .filter(|s| matches!(s.resource_records(), [one] if one.value() == WEST))
                .count();
            match out.next_record_name() {
                Some(name) if out.is_truncated() => next = Some((name.to_string(), out.next_record_type().cloned())),
                _ => return Ok(moved),
            }
        }
    }
}

fn record(group: &str) -> String {
    format!("{group}.{ZONE}")
}

fn set(name: &str, value: &str) -> anyhow::Result<ResourceRecordSet> {
    Ok(ResourceRecordSet::builder()
        .name(name)
        .r#type(RrType::A)
        .ttl(60)
        .resource_records(ResourceRecord::builder().value(value).build()?)
        .build()?)
}

/// A caller reference no earlier run used (Route 53 refuses a repeated one).
fn unique() -> String {
    format!("witness-bench-{}-{}", std::process::id(), crate::clock::unix_ms())
}
