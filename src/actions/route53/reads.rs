//! The readiness checks' reads of a hosted zone, shared by every step whose record lives in it
//! (reached through one endpoint with one set of credentials).
//!
//! A check of a route53 step reads the zone (GetHostedZone, `check`) and the step's record
//! (ListResourceRecordSets, `observe`): two requests, against an account that allows five a
//! second for all its callers, failovers' own changes included. A thousand groups checked every
//! five minutes would take more than that, and a new leadership checks every group within its
//! first ten seconds. Here one read serves them all: the zone's GetHostedZone and, when the zone
//! takes at most [`ZONE_PAGES`] pages, all its record sets, indexed by name (a larger zone's
//! records are read one by one, its GetHostedZone still shared). A read is reused for
//! [`REUSE`]; checks arriving while one is under way wait for it; a failed read serves only
//! those that waited for it. A change the plan makes to the zone drops its read ([`forget`]),
//! so a check after a failover reads afresh. A credentials file is read at every check, and a
//! read is shared only by checks with the same file contents.
//!
//! The plan's own steps never read through here: a compare-and-set needs what Route 53 holds at
//! the moment (`batch`).

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use aws_sdk_route53::types::ResourceRecordSet;
use futures::future::{BoxFuture, FutureExt, Shared};

use super::{account_key, client, normal_name, sdk_error, Listing, PAGE};
use crate::actions::{secrets, StepError};
use crate::clock::Stopwatch;
use crate::config::Route53Step;

/// How long a read of a zone serves the checks that come after it: a tenth of the default
/// `readiness_interval`. At most two reads of a zone's every record set a minute however many
/// groups it holds, against a result up to this old.
pub const REUSE: Duration = Duration::from_secs(30);
/// A zone of at most this many pages of record sets (300 each) is read whole; the requests of
/// one read are then at most this plus one.
pub const ZONE_PAGES: i64 = 20;

/// One read of a zone.
pub struct ZoneRead {
    pub name: String,
    /// Route 53's id of the zone, without `/hostedzone/`.
    pub id: String,
    /// Record sets in the zone, as GetHostedZone counts them.
    pub count: i64,
    /// Every record set, by name (as [`normal_name`] gives it) and type; `None` when the zone is
    /// larger than [`ZONE_PAGES`] pages.
    sets: Option<BTreeMap<(String, String), Vec<ResourceRecordSet>>>,
    taken: Stopwatch,
}

impl ZoneRead {
    /// How long ago it was read.
    pub fn age(&self) -> Duration {
        self.taken.elapsed()
    }
}

type Reading = Shared<BoxFuture<'static, Result<Arc<ZoneRead>, StepError>>>;

/// A zone reached one way ([`account_key`]), and the hash of its credentials file's contents.
type Key = (String, Option<u64>);

/// Per zone (see [`key`]), its latest read, done or under way, and when it began.
static READS: LazyLock<Mutex<HashMap<Key, (Stopwatch, Reading)>>> = LazyLock::new(Default::default);

/// The read of `step`'s zone: the latest if done within [`REUSE`] and not failed, or begun
/// within it and still under way (one that hangs is not waited for longer); else a new one.
pub async fn zone(step: &Route53Step) -> Result<Arc<ZoneRead>, StepError> {
    let key = key(step)?;
    let reading = {
        let mut reads = READS.lock().expect("zone reads lock poisoned");
        let usable = |(began, r): &&(Stopwatch, Reading)| match r.peek() {
            None => began.elapsed() < REUSE,
            Some(done) => done.as_ref().is_ok_and(|z| z.age() < REUSE),
        };
        match reads.get(&key).filter(usable) {
            Some((_, r)) => r.clone(),
            None => {
                let r = read(step.clone()).boxed().shared();
                reads.insert(key, (Stopwatch::start(), r.clone()));
                r
            }
        }
    };
    // The error of a read shared by the zone's steps, told to each with its own record.
    reading.await.map_err(|e| StepError { message: format!("{}, read for record {}", e.message, step.record), ..e })
}

/// The record sets of `step`'s record, from the zone's read, or read alone in a large zone.
pub async fn record(step: &Route53Step) -> Result<Listing, StepError> {
    let zone = zone(step).await?;
    let wanted = (normal_name(&step.record), step.record_type.clone());
    match &zone.sets {
        Some(sets) => Ok(Listing(sets.get(&wanted).cloned().unwrap_or_default())),
        None => Listing::read(&client(step).await?, step, &[(step.record.clone(), step.record_type.clone())]).await,
    }
}

/// The read `step` may share: of its zone reached the same way, with the same credentials. A
/// credentials file is read at every check, so that one removed, unreadable or rotated counts at
/// once rather than when the zone's read is next due.
fn key(step: &Route53Step) -> Result<Key, StepError> {
    let contents = match &step.credentials_file {
        Some(path) => {
            let mut hasher = std::hash::DefaultHasher::new();
            secrets::read("credentials_file", path)?.hash(&mut hasher);
            Some(hasher.finish())
        }
        None => None,
    };
    Ok((account_key(step), contents))
}

/// Drops the reads of `step`'s zone (with any credentials): the plan changed the zone.
pub fn forget(step: &Route53Step) {
    let zone = account_key(step);
    READS.lock().expect("zone reads lock poisoned").retain(|(key, _), _| *key != zone);
}

async fn read(step: Route53Step) -> Result<Arc<ZoneRead>, StepError> {
    // Errors name the zone alone: the read is every step's of the zone, not this one's.
    let step = Route53Step { record: String::new(), ..step };
    let client = client(&step).await?;
    let out =
        client.get_hosted_zone().id(&step.zone_id).send().await.map_err(|e| sdk_error(&step, "GetHostedZone", e))?;
    let zone = out.hosted_zone().ok_or_else(|| StepError::retryable("GetHostedZone answered without a hosted zone"))?;
    let count = zone.resource_record_set_count().unwrap_or(i64::MAX);
    let pages = count.saturating_add(i64::from(PAGE) - 1) / i64::from(PAGE);
    let sets = if pages <= ZONE_PAGES {
        let mut by_name: BTreeMap<(String, String), Vec<ResourceRecordSet>> = BTreeMap::new();
        for set in Listing::zone(&client, &step).await?.0 {
            by_name.entry((normal_name(set.name()), set.r#type().as_str().to_string())).or_default().push(set);
        }
        Some(by_name)
    } else {
        None
    };
    Ok(Arc::new(ZoneRead {
        name: zone.name().to_string(),
        id: zone.id().trim_start_matches("/hostedzone/").to_string(),
        count,
        sets,
        taken: Stopwatch::start(),
    }))
}
