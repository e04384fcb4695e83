//! The `route53` step: points a record (plain, or one weighted record per site) at the survivor
//! in one Route 53 change batch, which Route 53 applies atomically, together with a
//! compare-and-set of the group's epoch TXT record, so DNS never moves back to an older
//! decision; then waits for INSYNC and reads the result back. Steps for the same hosted zone
//! arriving together share the reads, the change batch and the wait, each group keeping its
//! own compare-and-set (`batch`). `check` and `observe` only read the zone, in a read shared by
//! the readiness checks of every step of the zone (`reads`).

mod batch;
mod reads;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_route53::config::http::HttpResponse;
use aws_sdk_route53::error::{BuildError, ProvideErrorMetadata, SdkError};
use aws_sdk_route53::types::{Change, ChangeAction, ChangeStatus, ResourceRecord, ResourceRecordSet, RrType};
use aws_sdk_route53::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

use super::{secrets, StepContext, StepError, StepResult};
use crate::config::Route53Step;

/// Route 53 usually reaches INSYNC within a minute; GetChange shares the account's limit of
/// five requests a second with every other Route 53 client.
const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Consecutive failed polls tolerated: the change is already made, so giving up only costs a
/// new attempt, which repeats it harmlessly.
const POLL_ERRORS: u32 = 5;

pub async fn run(step: &Route53Step, ctx: &StepContext) -> StepResult {
    let wanted = desired(step, ctx)?;
    let changed = batch::make(step, ctx, wanted.clone()).await?;
    let values = match wanted.as_slice() {
        [only] if only.set_identifier().is_none() => record_values(only),
        sets => sets
            .iter()
            .map(|s| {
                format!("{} weight {}: {}", s.set_identifier().unwrap_or(""), s.weight().unwrap_or(0), record_values(s))
            })
            .collect::<Vec<_>>()
            .join("; "),
    };
    let with = match changed.together {
        1 => String::new(),
        n => format!("; one change of {n} groups"),
    };
    Ok(format!(
        "{} {} -> {values}, epoch TXT {}, change {} INSYNC in {} ms{with}",
        step.record, step.record_type, ctx.epoch, changed.id, changed.ms
    ))
}

pub async fn check(step: &Route53Step) -> StepResult {
    let zone = reads::zone(step).await?;
    let age = zone.age().as_secs();
    let shared = if age > 0 { format!(" (read {age} s ago, with the zone's other checks)") } else { String::new() };
    Ok(format!("hosted zone {} ({}) reachable, {} record sets{shared}", zone.name, zone.id, zone.count))
}

/// The steps that share reads and changes: the same hosted zone, reached the same way
/// (endpoint, region, profile, credentials file).
fn account_key(step: &Route53Step) -> String {
    format!(
        "{} {} {} {:?} {:?}",
        step.zone_id,
        step.endpoint.as_ref().map_or("", |u| u.as_str()),
        step.region,
        step.profile,
        step.credentials_file
    )
}

/// Route 53's limit on API requests: five a second per AWS account, all callers together.
const ACCOUNT_RATE: f64 = 5.0;
/// The requests of one readiness check of a step read alone: GetHostedZone, and
/// ListResourceRecordSets to read its target back (`observe`).
const CHECK_REQUESTS: f64 = 2.0;

/// Warnings for the accounts (an endpoint, profile and credentials file) whose route53 steps'
/// readiness checks, each `(step, its group's readiness_interval)`, would take half of Route
/// 53's request rate or more: what is left is too little for a failover's own changes, and
/// throttled checks show plans not ready. The checks of a zone share its reads (`reads`): a
/// zone costs at most one read of [`reads::ZONE_PAGES`] pages and its GetHostedZone per
/// [`reads::REUSE`], which assumes no zone holds more record sets than that. Each warning names
/// the rate and the interval that keeps the checks to a quarter of it, read alone.
pub fn readiness_load<'a>(steps: impl IntoIterator<Item = (&'a Route53Step, Duration)>) -> Vec<String> {
    type Zones<'a> = BTreeMap<&'a str, (usize, f64)>;
    let mut accounts: BTreeMap<String, Zones> = BTreeMap::new();
    for (step, interval) in steps {
        let account = format!(
            "{}{}{}",
            step.endpoint.as_ref().map_or("Route 53".to_string(), |u| u.to_string()),
            step.profile.as_ref().map(|p| format!(", profile {p:?}")).unwrap_or_default(),
            step.credentials_file.as_ref().map(|f| format!(", credentials {}", f.display())).unwrap_or_default(),
        );
        let (steps, rate) = accounts.entry(account).or_default().entry(&step.zone_id).or_default();
        *steps += 1;
        *rate += CHECK_REQUESTS / interval.as_secs_f64().max(1.0);
    }
    let zone_most = (reads::ZONE_PAGES + 1) as f64 / reads::REUSE.as_secs_f64();
    accounts
        .into_iter()
        .filter_map(|(account, zones)| {
            let rate: f64 = zones.values().map(|(_, rate)| rate.min(zone_most)).sum();
            let steps: usize = zones.values().map(|(steps, _)| steps).sum();
            (rate >= ACCOUNT_RATE / 2.0).then_some((account, zones.len(), steps, rate))
        })
        .map(|(account, zones, steps, rate)| {
            let at_least = (CHECK_REQUESTS * steps as f64 / (ACCOUNT_RATE / 4.0)).ceil();
            format!(
                "readiness checks of {steps} route53 steps in {zones} hosted zones would make {rate:.1} requests a \
                 second to {account}; Route 53 allows {ACCOUNT_RATE} a second per account, failovers' changes \
                 included: set their groups' readiness_interval to {at_least}s or more (a quarter of the rate)"
            )
        })
        .collect()
}

/// A client reaching `step`'s zone as the step does (endpoint, region, credentials).
pub async fn client(step: &Route53Step) -> Result<Client, StepError> {
    let http = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    let region = Region::new(step.region.clone());
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http.clone())
        .region(region.clone())
        // Standard mode retries throttling (PriorRequestNotComplete included), 5xx and connection
        // failures within one attempt, with exponential backoff and jitter; kept short because the
        // whole attempt runs under the step's timeout.
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(4)
                .with_initial_backoff(Duration::from_millis(500))
                .with_max_backoff(Duration::from_secs(5)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(20))
                .build(),
        );
    if let Some(url) = &step.endpoint {
        loader = loader.endpoint_url(url.as_str());
    }
    if let Some(path) = &step.credentials_file {
        // Read on every run, so a rotated file takes effect without a restart.
        let text = String::from_utf8(secrets::read("credentials_file", path)?)
            .map_err(|_| StepError::permanent(format!("credentials_file {} is not UTF-8", path.display())))?;
        #[allow(deprecated)] // the replacement types live in aws-runtime, which is not our dependency
        let files = aws_config::profile::profile_file::ProfileFiles::builder()
            .with_contents(aws_config::profile::profile_file::ProfileFileKind::Credentials, text)
            .build();
        let profile = step.profile.as_deref().unwrap_or("default");
        let conf = ProviderConfig::without_region()
            .with_region(Some(region))
            .with_http_client(http)
            .with_behavior_version(Some(BehaviorVersion::latest()));
        // The file's profile alone, not the default chain, whose environment variables would
        // otherwise take precedence over the file the operator named.
        let provider = ProfileFileCredentialsProvider::builder()
            .configure(&conf)
            .profile_files(files.clone())
            .profile_name(profile)
            .build();
        loader = loader.profile_files(files).profile_name(profile).credentials_provider(provider);
    } else if let Some(profile) = &step.profile {
        loader = loader.profile_name(profile);
    }
    Ok(Client::new(&loader.load().await))
}

/// The record sets the step leaves behind: the survivor's plain record, or both sites' weighted
/// records with the survivor's weight and 0 for the failed site.
fn desired(step: &Route53Step, ctx: &StepContext) -> Result<Vec<ResourceRecordSet>, StepError> {
    let set = |site: &str, weighted: Option<i64>| {
        let values = step
            .values
            .get(site)
            .ok_or_else(|| StepError::permanent(format!("route53 step has no values for site {site:?}")))?;
        let records = values.iter().map(|v| ResourceRecord::builder().value(v).build()).collect::<Result<_, _>>();
        let mut b = ResourceRecordSet::builder()
            .name(&step.record)
            .r#type(RrType::from(step.record_type.as_str()))
            .ttl(step.ttl.into())
            .set_resource_records(Some(records.map_err(built)?));
        if let Some(weight) = weighted {
            let id = step
                .set_identifiers
                .get(site)
                .ok_or_else(|| StepError::permanent(format!("route53 step has no set identifier for site {site:?}")))?;
            b = b.set_identifier(id).weight(weight);
        }
        b.build().map_err(built)
    };
    if step.set_identifiers.is_empty() {
        Ok(vec![set(&ctx.to, None)?])
    } else {
        Ok(vec![set(&ctx.to, Some(step.weight.into()))?, set(&ctx.from, Some(0))?])
    }
}

/// What the epoch TXT record says, as written by `epoch_value`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Epoch {
    group: String,
    epoch: u64,
    active: String,
}

fn epoch_value(ctx: &StepContext) -> String {
    format!("\"group={} epoch={} active={}\"", ctx.group, ctx.epoch, ctx.to)
}

fn parse_epoch(value: &str) -> Option<Epoch> {
    let text = value.trim();
    let text = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(text);
    let (mut group, mut epoch, mut active) = (None, None, None);
    for field in text.split_whitespace() {
        match field.split_once('=')? {
            ("group", g) => group = Some(g.to_string()),
            ("epoch", n) => epoch = Some(n.parse().ok()?),
            ("active", s) => active = Some(s.to_string()),
            _ => return None,
        }
    }
    Some(Epoch { group: group?, epoch: epoch?, active: active? })
}

/// The epoch TXT half of the batch, a compare-and-set: DELETE of the exact set read plus CREATE
/// fails the whole batch if anyone changed it since (as does a CREATE where none was read).
fn epoch_changes(
    step: &Route53Step,
    ctx: &StepContext,
    current: Option<ResourceRecordSet>,
) -> Result<Vec<Change>, StepError> {
    let name = step.epoch_record();
    let new = ResourceRecordSet::builder()
        .name(&name)
        .r#type(RrType::Txt)
        .ttl(step.ttl.into())
        .resource_records(ResourceRecord::builder().value(epoch_value(ctx)).build().map_err(built)?)
        .build()
        .map_err(built)?;
    let Some(current) = current else { return Ok(vec![change(ChangeAction::Create, new)?]) };
    let found = match current.resource_records() {
        [one] => parse_epoch(one.value()),
        _ => None,
    };
    let shown = current.resource_records().iter().map(|r| r.value()).collect::<Vec<_>>().join(" ");
    let Some(found) = found else {
        return Err(StepError::permanent(format!(
            "epoch TXT {name} holds {shown}, which witness did not write; delete it or choose another record"
        )));
    };
    if found.group != ctx.group {
        return Err(StepError::permanent(format!(
            "epoch TXT {name} belongs to group {:?}, not {:?}: two groups share record {}",
            found.group, ctx.group, step.record
        )));
    }
    if found.epoch > ctx.epoch {
        return Err(StepError::permanent(format!("superseded: Route 53 already carries epoch {}", found.epoch)));
    }
    if found.epoch == ctx.epoch {
        if found.active != ctx.to {
            return Err(StepError::permanent(format!(
                "epoch TXT {name} says epoch {} made {:?} active, but this failover makes {:?} active",
                found.epoch, found.active, ctx.to
            )));
        }
        return Ok(vec![change(ChangeAction::Upsert, new)?]);
    }
    Ok(vec![change(ChangeAction::Delete, current)?, change(ChangeAction::Create, new)?])
}

fn change(action: ChangeAction, set: ResourceRecordSet) -> Result<Change, StepError> {
    Change::builder().action(action).resource_record_set(set).build().map_err(built)
}

fn built(e: BuildError) -> StepError {
    StepError::permanent(format!("route53 request could not be built: {e}"))
}

/// Route 53 returns at most this many record sets per ListResourceRecordSets page.
const PAGE: i32 = 300;

/// Record sets read from a hosted zone: those of the names asked for, or the whole zone when
/// paging through it takes fewer requests than asking for each name (every request counts
/// against the account's five a second).
struct Listing(Vec<ResourceRecordSet>);

impl Listing {
    /// The sets of each (name, type) in `names`, every set identifier.
    async fn read(client: &Client, step: &Route53Step, names: &[(String, String)]) -> Result<Listing, StepError> {
        let mut names = names.to_vec();
        names.sort();
        names.dedup();
        if names.len() > 2 {
            let zone = client
                .get_hosted_zone()
                .id(&step.zone_id)
                .send()
                .await
                .map_err(|e| sdk_error(step, "GetHostedZone", e))?;
            let count = zone.hosted_zone().and_then(|z| z.resource_record_set_count()).unwrap_or(i64::MAX);
            let pages = count.saturating_add(i64::from(PAGE) - 1) / i64::from(PAGE);
            if pages.max(1) < names.len() as i64 {
                return Listing::zone(client, step).await;
            }
        }
        let mut sets = Vec::new();
        for (name, rtype) in &names {
            sets.extend(list(client, step, name, rtype).await?);
        }
        Ok(Listing(sets))
    }

    /// Every record set of the zone, page by page.
    async fn zone(client: &Client, step: &Route53Step) -> Result<Listing, StepError> {
        let mut sets = Vec::new();
        let mut next: Option<(String, Option<RrType>, Option<String>)> = None;
        loop {
            let mut request = client.list_resource_record_sets().hosted_zone_id(&step.zone_id).max_items(PAGE);
            if let Some((name, rtype, id)) = next.take() {
                request = request.start_record_name(name).set_start_record_type(rtype).set_start_record_identifier(id);
            }
            let out = request.send().await.map_err(|e| sdk_error(step, "ListResourceRecordSets", e))?;
            sets.extend(out.resource_record_sets().iter().cloned());
            match out.next_record_name() {
                Some(name) if out.is_truncated() => {
                    next = Some((
                        name.to_string(),
                        out.next_record_type().cloned(),
                        out.next_record_identifier().map(String::from),
                    ))
                }
                _ => return Ok(Listing(sets)),
            }
        }
    }

    /// The sets called `name` of type `rtype`.
    fn sets<'a>(&'a self, name: &'a str, rtype: &'a str) -> impl Iterator<Item = &'a ResourceRecordSet> + 'a {
        self.0.iter().filter(move |s| named(s, name, rtype))
    }

    /// The group's epoch TXT set, if there is one.
    fn epoch(&self, step: &Route53Step) -> Option<&ResourceRecordSet> {
        let name = step.epoch_record();
        self.0.iter().find(|s| named(s, &name, "TXT"))
    }
}

/// Whether `set` is called `name` and is of type `rtype`.
fn named(set: &ResourceRecordSet, name: &str, rtype: &str) -> bool {
    same_name(set.name(), name) && set.r#type().as_str() == rtype
}

/// The record sets called `name` of type `rtype`, every set identifier (Route 53 lists from
/// the start name onwards, so later names are cut off here).
async fn list(
    client: &Client,
    step: &Route53Step,
    name: &str,
    rtype: &str,
) -> Result<Vec<ResourceRecordSet>, StepError> {
    let out = client
        .list_resource_record_sets()
        .hosted_zone_id(&step.zone_id)
        .start_record_name(name)
        .start_record_type(RrType::from(rtype))
        .max_items(100)
        .send()
        .await
        .map_err(|e| sdk_error(step, "ListResourceRecordSets", e))?;
    Ok(out.resource_record_sets().iter().filter(|s| named(s, name, rtype)).cloned().collect())
}

async fn change_status(client: &Client, step: &Route53Step, id: &str) -> Result<ChangeStatus, StepError> {
    let out = client.get_change().id(id).send().await.map_err(|e| sdk_error(step, "GetChange", e))?;
    let info = out.change_info().ok_or_else(|| StepError::retryable("GetChange answered without a change"))?;
    Ok(info.status().clone())
}

/// Polls until INSYNC (at once, then every `interval`); returns how many polls it took.
/// Retryable poll failures are tolerated up to `POLL_ERRORS` in a row; the step's timeout
/// bounds the whole wait.
async fn wait_insync<F, Fut>(mut poll: F, interval: Duration) -> Result<u32, StepError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<ChangeStatus, StepError>>,
{
    let (mut polls, mut errors) = (0, 0);
    loop {
        polls += 1;
        match poll().await {
            Ok(ChangeStatus::Insync) => return Ok(polls),
            Ok(_) => errors = 0,
            Err(e) if e.retryable && errors + 1 < POLL_ERRORS => {
                errors += 1;
                tracing::warn!(error = %e, "route53 change status poll failed; polling on");
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(interval).await;
    }
}

/// Whether Route 53 serves `ctx.to`'s record set(s) (reads; changes nothing). The epoch TXT
/// is not compared: a group that never failed over has none.
pub async fn observe(step: &Route53Step, ctx: &StepContext) -> Result<super::Observed, StepError> {
    let wanted = desired(step, ctx)?;
    let listing = reads::record(step).await?;
    Ok(match differs(&listing, step, &wanted) {
        None => super::Observed::InPlace,
        Some(what) => super::Observed::Drifted(format!("{what} (the active site is {})", ctx.to)),
    })
}

/// How what Route 53 serves for the record differs from `wanted`, if it does.
fn differs(listing: &Listing, step: &Route53Step, wanted: &[ResourceRecordSet]) -> Option<String> {
    for want in wanted {
        let got = listing.sets(&step.record, &step.record_type).find(|s| s.set_identifier() == want.set_identifier());
        let ok = got.is_some_and(|g| g.weight() == want.weight() && same_values(g, want));
        if !ok {
            let what = want.set_identifier().map(|id| format!(" (set {id})")).unwrap_or_default();
            let shown = got.map(|g| format!("{} weight {}", record_values(g), weight(g)));
            return Some(format!(
                "{} {}{what}: expected {} weight {}, found {}",
                step.record,
                step.record_type,
                record_values(want),
                weight(want),
                shown.as_deref().unwrap_or("nothing")
            ));
        }
    }
    None
}

/// Checks what Route 53 now serves for the record(s) and the epoch TXT, as read back.
fn verify(
    listing: &Listing,
    step: &Route53Step,
    ctx: &StepContext,
    wanted: &[ResourceRecordSet],
) -> Result<(), StepError> {
    if let Some(what) = differs(listing, step, wanted) {
        return Err(StepError::retryable(format!("read back {what}")));
    }
    let found = listing.epoch(step);
    let parsed = found.and_then(|s| match s.resource_records() {
        [one] => parse_epoch(one.value()),
        _ => None,
    });
    let want = Epoch { group: ctx.group.clone(), epoch: ctx.epoch, active: ctx.to.clone() };
    if parsed.as_ref() != Some(&want) {
        let found = found.map_or_else(|| "nothing".to_string(), record_values);
        let msg = format!("read back {}: expected {}, found {found}", step.epoch_record(), epoch_value(ctx));
        return Err(StepError::retryable(msg));
    }
    Ok(())
}

/// A set's weight as an operator reads it: the number, or `none` for a set without one.
fn weight(set: &ResourceRecordSet) -> String {
    set.weight().map_or_else(|| "none".to_string(), |w| w.to_string())
}

fn record_values(set: &ResourceRecordSet) -> String {
    set.resource_records().iter().map(|r| r.value()).collect::<Vec<_>>().join(",")
}

/// Values compared as Route 53 may render them: addresses parsed, names without case or root dot.
fn same_values(a: &ResourceRecordSet, b: &ResourceRecordSet) -> bool {
    let norm = |s: &ResourceRecordSet| {
        let mut v: Vec<String> = s
            .resource_records()
            .iter()
            .map(|r| match r.value().parse::<IpAddr>() {
                Ok(ip) => ip.to_string(),
                Err(_) => r.value().trim_end_matches('.').to_ascii_lowercase(),
            })
            .collect();
        v.sort();
        v
    };
    norm(a) == norm(b)
}

/// Route 53 lists names in lower case with a root dot and escapes characters such as `*` as `\052`.
fn same_name(listed: &str, ours: &str) -> bool {
    normal_name(listed) == normal_name(ours)
}

/// A name as [`same_name`] compares it: escapes undone, without case or root dot.
fn normal_name(n: &str) -> String {
    let mut out = String::with_capacity(n.len());
    let mut rest = n;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let octal = rest.get(i + 1..i + 4).filter(|d| d.bytes().all(|b| b.is_ascii_digit()));
        match octal.and_then(|d| u8::from_str_radix(d, 8).ok()) {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[i + 4..];
            }
            _ => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether a failed Route 53 call may succeed if tried again, from the service's error code
/// and HTTP status (both absent when no answer came: a connection failure or timeout).
fn retryable(code: Option<&str>, status: Option<u16>) -> bool {
    match code {
        Some("Throttling" | "ThrottlingException" | "RequestThrottled" | "PriorRequestNotComplete") => true,
        // InvalidChangeBatch: our compare-and-set lost (the TXT changed since it was read); a new
        // attempt reads again. Also what a genuinely bad batch gets, at the cost of a few retries.
        Some("InvalidChangeBatch") => true,
        Some(
            "InvalidClientTokenId"
            | "AccessDenied"
            | "AccessDeniedException"
            | "SignatureDoesNotMatch"
            | "IncompleteSignature"
            | "MissingAuthenticationToken"
            | "NoSuchHostedZone"
            | "InvalidInput"
            | "InvalidDomainName",
        ) => false,
        // Anything else by its status: no answer at all, 429 and 5xx may pass.
        _ => status.is_none_or(|s| s == 429 || !(400..500).contains(&s)),
    }
}

fn sdk_error<E>(step: &Route53Step, op: &str, err: SdkError<E, HttpResponse>) -> StepError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let target = match step.record.as_str() {
        "" => format!("Route 53 {op} (zone {})", step.zone_id),
        record => format!("Route 53 {op} (zone {}, record {record})", step.zone_id),
    };
    match &err {
        SdkError::ConstructionFailure(_) => {
            StepError::permanent(format!("{target}: {}", crate::tls::failure::causes(&err)))
        }
        SdkError::TimeoutError(_) => StepError::retryable(format!("{target}: timed out")),
        // A user error is e.g. an unusable endpoint URL. Credentials that could not be loaded
        // also end up here, as "other": retryable, since a metadata service may answer next time.
        SdkError::DispatchFailure(d) if d.is_user() => {
            StepError::permanent(format!("{target}: {}", crate::tls::failure::causes(&err)))
        }
        SdkError::DispatchFailure(_) => {
            StepError::retryable(format!("{target}: {}", crate::tls::failure::causes(&err)))
        }
        _ => {
            let (code, status) = (err.code(), err.raw_response().map(|r| r.status().as_u16()));
            let detail = match (code, err.message()) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.to_string(),
                _ => crate::tls::failure::causes(&err),
            };
            let message = format!("{target}: {detail}{}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default());
            if retryable(code, status) {
                StepError::retryable(message)
            } else {
                StepError::permanent(message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn step(weighted: bool) -> Route53Step {
        let site = |e: &str, w: &str| {
            BTreeMap::from([("east".to_string(), e.to_string()), ("west".to_string(), w.to_string())])
        };
        Route53Step {
            zone_id: "Z1".into(),
            record: "app.example.test.".into(),
            record_type: "A".into(),
            ttl: 60,
            values: BTreeMap::from([
                ("east".to_string(), vec!["192.0.2.1".to_string()]),
                ("west".to_string(), vec!["198.51.100.7".to_string()]),
            ]),
            set_identifiers: if weighted { site("east-id", "west-id") } else { BTreeMap::new() },
            weight: 100,
            endpoint: None,
            region: "us-east-1".into(),
            profile: None,
            credentials_file: None,
        }
    }

    #[test]
    fn readiness_checks_taking_half_of_an_accounts_rate_are_named_with_the_interval_that_fits() {
        let five_minutes = Duration::from_secs(300);
        // Steps in `zones` hosted zones, as many in each.
        let spread = |steps: usize, zones: usize| -> Vec<Route53Step> {
            (0..steps).map(|i| Route53Step { zone_id: format!("Z{}", i % zones), ..step(false) }).collect()
        };
        let load = |steps: &[&Route53Step]| readiness_load(steps.iter().map(|s| (*s, five_minutes)));
        let few = spread(100, 100);
        assert!(load(&few.iter().collect::<Vec<_>>()).is_empty(), "0.7 requests a second");
        // A thousand in one zone share its reads: one a second at most, however many.
        let one_zone = spread(1000, 1);
        assert!(load(&one_zone.iter().collect::<Vec<_>>()).is_empty(), "at most 0.7 requests a second");
        let many = spread(1000, 100);
        assert_eq!(
            load(&many.iter().collect::<Vec<_>>()),
            ["readiness checks of 1000 route53 steps in 100 hosted zones would make 6.7 requests a second to \
              Route 53; Route 53 allows 5 a second per account, failovers' changes included: set their groups' \
              readiness_interval to 1600s or more (a quarter of the rate)"]
        );
        // Another account's steps are counted apart.
        let other: Vec<_> =
            spread(250, 25).into_iter().map(|s| Route53Step { profile: Some("dr".into()), ..s }).collect();
        let split: Vec<_> = many.iter().take(250).chain(&other).collect();
        assert!(load(&split).is_empty(), "1.7 a second each");
    }

    fn ctx(epoch: u64) -> StepContext {
        StepContext {
            group: "app".into(),
            epoch,
            from: "east".into(),
            to: "west".into(),
            reason: "test".into(),
            decided_at_ms: 0,
            step: "dns".into(),
        }
    }

    fn txt(value: &str) -> ResourceRecordSet {
        ResourceRecordSet::builder()
            .name("_witness-epoch.app.example.test.")
            .r#type(RrType::Txt)
            .ttl(300)
            .resource_records(ResourceRecord::builder().value(value).build().unwrap())
            .build()
            .unwrap()
    }

    fn actions(changes: &[Change]) -> Vec<(ChangeAction, String)> {
        changes
            .iter()
            .map(|c| (c.action().clone(), c.resource_record_set().map(record_values).unwrap_or_default()))
            .collect()
    }

    #[test]
    fn classifies_errors_by_code_and_status() {
        let table: &[(Option<&str>, Option<u16>, bool)] = &[
            (Some("Throttling"), Some(400), true),
            (Some("PriorRequestNotComplete"), Some(400), true),
            (Some("InvalidChangeBatch"), Some(400), true),
            (None, Some(503), true),
            (Some("InternalFailure"), Some(500), true),
            (None, Some(429), true),
            (None, None, true),
            (Some("InvalidClientTokenId"), Some(403), false),
            (Some("AccessDenied"), Some(403), false),
            (Some("SignatureDoesNotMatch"), Some(403), false),
            (Some("NoSuchHostedZone"), Some(404), false),
            (Some("InvalidInput"), Some(400), false),
            (Some("SomethingNew"), Some(400), false),
            (Some("SomethingNew"), Some(502), true),
        ];
        for &(code, status, want) in table {
            assert_eq!(retryable(code, status), want, "{code:?} {status:?}");
        }
    }

    #[test]
    fn epoch_txt_round_trips_and_rejects_foreign_values() {
        let want = Epoch { group: "app".into(), epoch: 2, active: "west".into() };
        assert_eq!(parse_epoch(&epoch_value(&ctx(2))), Some(want.clone()));
        assert_eq!(parse_epoch("group=app epoch=2 active=west"), Some(want));
        for bad in ["\"v=spf1 -all\"", "\"group=app epoch=x active=west\"", "\"group=app active=west\"", ""] {
            assert_eq!(parse_epoch(bad), None, "{bad}");
        }
    }

    #[test]
    fn epoch_changes_are_a_compare_and_set() {
        let (s, new) = (step(false), "\"group=app epoch=2 active=west\"".to_string());
        let none = epoch_changes(&s, &ctx(2), None).unwrap();
        assert_eq!(actions(&none), [(ChangeAction::Create, new.clone())]);
        let old = "\"group=app epoch=1 active=east\"";
        let lower = epoch_changes(&s, &ctx(2), Some(txt(old))).unwrap();
        assert_eq!(actions(&lower), [(ChangeAction::Delete, old.to_string()), (ChangeAction::Create, new.clone())]);
        assert_eq!(lower[0].resource_record_set().unwrap().ttl(), Some(300), "DELETE repeats the set exactly");
        let same = epoch_changes(&s, &ctx(2), Some(txt(&new))).unwrap();
        assert_eq!(actions(&same), [(ChangeAction::Upsert, new)]);

        let newer = epoch_changes(&s, &ctx(2), Some(txt("\"group=app epoch=3 active=east\""))).unwrap_err();
        assert!(!newer.retryable && newer.message == "superseded: Route 53 already carries epoch 3", "{newer}");
        for foreign in ["\"group=other epoch=1 active=east\"", "\"hello\"", "\"group=app epoch=2 active=east\""] {
            assert!(!epoch_changes(&s, &ctx(2), Some(txt(foreign))).unwrap_err().retryable, "{foreign}");
        }
    }

    #[test]
    fn weighted_records_flip_to_the_survivor() {
        let sets = desired(&step(true), &ctx(2)).unwrap();
        let got: Vec<_> = sets.iter().map(|s| (s.set_identifier().unwrap(), s.weight(), record_values(s))).collect();
        assert_eq!(got, [("west-id", Some(100), "198.51.100.7".into()), ("east-id", Some(0), "192.0.2.1".into())]);
        let plain = desired(&step(false), &ctx(2)).unwrap();
        assert_eq!((plain.len(), plain[0].set_identifier(), plain[0].weight()), (1, None, None));
        let mut missing = step(false);
        missing.values.remove("west");
        assert!(!desired(&missing, &ctx(2)).unwrap_err().retryable);
    }

    #[test]
    fn names_and_values_compare_as_route53_renders_them() {
        assert!(same_name("\\052.app.example.test.", "*.App.Example.test"));
        assert!(same_name("_witness-epoch.app.example.test.", "_witness-epoch.app.example.test."));
        assert!(!same_name("app.example.test.", "app2.example.test."));
        let set = |v: &str| {
            let r = ResourceRecord::builder().value(v).build().unwrap();
            ResourceRecordSet::builder().name("a.").r#type(RrType::Aaaa).resource_records(r).build().unwrap()
        };
        assert!(same_values(&set("2001:db8:0::1"), &set("2001:db8::1")));
        assert!(same_values(&set("Target.example.test."), &set("target.example.test")));
        assert!(!same_values(&set("192.0.2.1"), &set("192.0.2.2")));
        let weighted = ResourceRecordSet::builder().name("a.").r#type(RrType::A).weight(100).build().unwrap();
        assert_eq!((weight(&weighted), weight(&set("192.0.2.1"))), ("100".into(), "none".into()), "not Some(100)");
    }

    async fn scripted(script: Vec<Result<ChangeStatus, StepError>>) -> (Result<u32, StepError>, u32) {
        let calls = AtomicU32::new(0);
        let result = wait_insync(
            || {
                let i = calls.fetch_add(1, Ordering::SeqCst) as usize;
                let next = script.get(i).cloned().unwrap_or(Ok(ChangeStatus::Pending));
                async move { next }
            },
            Duration::from_millis(1),
        )
        .await;
        (result, calls.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn polls_until_insync() {
        let (r, calls) =
            scripted(vec![Ok(ChangeStatus::Pending), Ok(ChangeStatus::Pending), Ok(ChangeStatus::Insync)]).await;
        assert_eq!((r.unwrap(), calls), (3, 3));
        let (r, _) = scripted(vec![Ok(ChangeStatus::Insync)]).await;
        assert_eq!(r.unwrap(), 1, "the first poll is immediate");
    }

    #[tokio::test]
    async fn throttled_polls_are_retried_and_permanent_errors_stop() {
        let throttled = || Err(StepError::retryable("Throttling: Rate exceeded"));
        let (r, calls) = scripted(vec![Ok(ChangeStatus::Pending), throttled(), Ok(ChangeStatus::Insync)]).await;
        assert_eq!((r.unwrap(), calls), (3, 3));
        let (r, calls) = scripted(vec![Ok(ChangeStatus::Pending), Err(StepError::permanent("AccessDenied"))]).await;
        assert_eq!((r.unwrap_err().message, calls), ("AccessDenied".to_string(), 2));
        let (r, calls) = scripted(vec![throttled(); 10]).await;
        assert!(r.unwrap_err().retryable);
        assert_eq!(calls, POLL_ERRORS);
    }
}
