//! Route 53 steps for one hosted zone (through one endpoint, with one set of credentials)
//! arriving within [`WINDOW`] of each other go together: one read of their epoch TXTs, one
//! change batch (or a few, within Route 53's limits on one request), one wait for INSYNC and
//! one read back. Route 53 allows five requests a second per account and applies a zone's
//! changes one request at a time, so 500 groups each making their own five or more requests
//! would take minutes; together they take a handful.
//!
//! Each group keeps its own compare-and-set of its epoch TXT inside the shared batch. Route 53
//! applies a batch atomically, so if one group's compare-and-set loses (or two groups' changes
//! are at odds), it refuses the whole batch (`InvalidChangeBatch`), and each group is then
//! tried alone, rereading its own epoch, so that each step gets its own answer.

use std::time::Duration;

use aws_sdk_route53::error::ProvideErrorMetadata;
use aws_sdk_route53::types::{Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecordSet};
use aws_sdk_route53::Client;
use futures::future::BoxFuture;
use tokio::sync::oneshot;

use super::{
    account_key, built, change, change_status, client, epoch_changes, reads, sdk_error, verify, wait_insync, Listing,
    POLL_INTERVAL,
};
use crate::actions::gather::Gather;
use crate::actions::{StepContext, StepError};
use crate::clock::Stopwatch;
use crate::config::Route53Step;

/// How long the first step of a batch waits for others: a change takes Route 53 seconds to
/// reach INSYNC, and one request more costs a fifth of the account's second.
const WINDOW: Duration = Duration::from_millis(100);
/// At most this many steps gathered at once; [`within_limits`] splits them into requests.
const MOST: usize = 1000;
/// Route 53's limits on one ChangeResourceRecordSets request: ResourceRecord elements, and
/// characters in their values; an UPSERT's are counted twice.
const MOST_RECORDS: usize = 1000;
const MOST_CHARACTERS: usize = 32_000;

static GATHER: Gather<Pending> = Gather::new(WINDOW, MOST);

/// A change made and INSYNC, as one step sees it.
pub struct Changed {
    /// Route 53's id of the change (without `/change/`).
    pub id: String,
    /// From submitting the change until it was INSYNC.
    pub ms: u128,
    /// How many groups' steps the change carried.
    pub together: usize,
}

struct Pending {
    step: Route53Step,
    ctx: StepContext,
    wanted: Vec<ResourceRecordSet>,
    done: oneshot::Sender<Result<Changed, StepError>>,
}

impl Pending {
    fn answer(self, result: Result<Changed, StepError>) {
        let _ = self.done.send(result);
    }
}

fn answer_all(batch: Vec<Pending>, error: &StepError) {
    batch.into_iter().for_each(|p| p.answer(Err(error.clone())));
}

/// Points `step`'s record at `wanted` and its epoch TXT at `ctx`'s decision, in a change
/// shared with the other steps for the same zone that arrive within [`WINDOW`].
pub async fn make(step: &Route53Step, ctx: &StepContext, wanted: Vec<ResourceRecordSet>) -> Result<Changed, StepError> {
    let (done, answer) = oneshot::channel();
    let pending = Pending { step: step.clone(), ctx: ctx.clone(), wanted, done };
    let _withdraw = GATHER.join(&account_key(step), pending, send);
    answer.await.unwrap_or_else(|_| Err(StepError::retryable("the Route 53 change batch it was in was dropped")))
}

async fn send(batch: Vec<Pending>) {
    // Every step of the batch reaches the zone the same way: the first's settings serve all.
    let step = batch[0].step.clone();
    match client(&step).await {
        Ok(client) => apply(&client, &step, batch).await,
        Err(e) => answer_all(batch, &e),
    }
}

/// Reads the batch's epoch TXTs, makes its changes, waits for them and reads them back.
fn apply<'a>(client: &'a Client, step: &'a Route53Step, batch: Vec<Pending>) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        let names: Vec<_> = batch.iter().map(|p| (p.step.epoch_record(), "TXT".to_string())).collect();
        let epochs = match Listing::read(client, step, &names).await {
            Ok(listing) => listing,
            Err(e) => return answer_all(batch, &e),
        };
        let mut ready = Vec::new();
        for p in batch {
            match changes(&p, epochs.epoch(&p.step).cloned()) {
                Ok(changes) => ready.push((p, changes)),
                Err(e) => p.answer(Err(e)),
            }
        }
        let mut made = Vec::new();
        for chunk in within_limits(ready) {
            let (pendings, changes): (Vec<Pending>, Vec<Vec<Change>>) = chunk.into_iter().unzip();
            match submit(client, step, &pendings, changes.concat()).await {
                Ok(change) => made.push((change, pendings)),
                Err((e, refused)) if refused && pendings.len() > 1 => {
                    tracing::info!(zone = %step.zone_id, groups = pendings.len(), error = %e,
                        "route53 refused a shared change batch; each group alone");
                    for p in pendings {
                        apply(client, step, vec![p]).await;
                    }
                }
                Err((e, _)) => answer_all(pendings, &e),
            }
        }
        let mut insync = Vec::new();
        for ((id, status, submitted), pendings) in made {
            let poll = || async {
                // Nobody waits for it any more (every step timed out): stop spending requests.
                if pendings.iter().all(|p| p.done.is_closed()) {
                    return Err(StepError::permanent("no step waits for the change"));
                }
                change_status(client, step, &id).await
            };
            let waited = match status {
                ChangeStatus::Insync => Ok(0),
                _ => wait_insync(poll, POLL_INTERVAL).await,
            };
            match waited {
                Ok(_) => insync.push((id, submitted.elapsed().as_millis(), pendings)),
                Err(e) => answer_all(pendings, &e),
            }
        }
        let names: Vec<_> = insync
            .iter()
            .flat_map(|(_, _, pendings)| pendings)
            .flat_map(|p| [(p.step.record.clone(), p.step.record_type.clone()), (p.step.epoch_record(), "TXT".into())])
            .collect();
        if names.is_empty() {
            return;
        }
        let back = Listing::read(client, step, &names).await;
        for (id, ms, pendings) in insync {
            let together = pendings.len();
            for p in pendings {
                let result = match &back {
                    Ok(back) => {
                        verify(back, &p.step, &p.ctx, &p.wanted).map(|()| Changed { id: id.clone(), ms, together })
                    }
                    Err(e) => Err(e.clone()),
                };
                p.answer(result);
            }
        }
    })
}

/// One step's half of a batch: the compare-and-set of its epoch TXT (against `current`, as
/// read), and its record set(s).
fn changes(p: &Pending, current: Option<ResourceRecordSet>) -> Result<Vec<Change>, StepError> {
    let mut changes = epoch_changes(&p.step, &p.ctx, current)?;
    for set in &p.wanted {
        changes.push(change(ChangeAction::Upsert, set.clone())?);
    }
    Ok(changes)
}

/// Makes one change of `changes` for `pendings`: its id, its status, and since when. `Err`
/// says also whether Route 53 refused the batch as such (`InvalidChangeBatch`: a
/// compare-and-set lost, or changes at odds with each other).
async fn submit(
    client: &Client,
    step: &Route53Step,
    pendings: &[Pending],
    changes: Vec<Change>,
) -> Result<(String, ChangeStatus, Stopwatch), (StepError, bool)> {
    let comment = match pendings {
        [one] => one.ctx.idempotency_key(),
        [first, ..] => format!("{} and {} more", first.ctx.idempotency_key(), pendings.len() - 1),
        [] => String::new(),
    };
    let batch =
        ChangeBatch::builder().comment(comment).set_changes(Some(changes)).build().map_err(|e| (built(e), false))?;
    let submitted = Stopwatch::start();
    let out =
        client.change_resource_record_sets().hosted_zone_id(&step.zone_id).change_batch(batch).send().await.map_err(
            |e| {
                let refused = e.code() == Some("InvalidChangeBatch");
                (sdk_error(step, "ChangeResourceRecordSets", e), refused)
            },
        )?;
    let Some(info) = out.change_info() else {
        return Err((StepError::retryable("ChangeResourceRecordSets answered without a change"), false));
    };
    let id = info.id().trim_start_matches("/change/").to_string();
    tracing::info!(zone = %step.zone_id, change = %id, groups = pendings.len(), "route53 change made");
    // The readiness checks' read of the zone no longer says what it holds.
    reads::forget(step);
    Ok((id, info.status().clone(), submitted))
}

/// What a request's changes count against Route 53's limits: ResourceRecord elements, and
/// characters in their values, an UPSERT's twice.
fn cost(changes: &[Change]) -> (usize, usize) {
    changes.iter().fold((0, 0), |(records, characters), c| {
        let twice = if *c.action() == ChangeAction::Upsert { 2 } else { 1 };
        let values = c.resource_record_set().map(|s| s.resource_records()).unwrap_or_default();
        let length: usize = values.iter().map(|r| r.value().len()).sum();
        (records + twice * values.len(), characters + twice * length)
    })
}

/// Steps with their changes, in order, cut into requests within Route 53's limits (a step's
/// changes are never split: they are its compare-and-set).
fn within_limits<T>(items: Vec<(T, Vec<Change>)>) -> Vec<Vec<(T, Vec<Change>)>> {
    let mut requests: Vec<Vec<(T, Vec<Change>)>> = Vec::new();
    let mut used = (0, 0);
    for (item, changes) in items {
        let (records, characters) = cost(&changes);
        let fits = used.0 + records <= MOST_RECORDS && used.1 + characters <= MOST_CHARACTERS;
        match requests.last_mut() {
            Some(request) if fits => {
                used = (used.0 + records, used.1 + characters);
                request.push((item, changes));
            }
            _ => {
                used = (records, characters);
                requests.push(vec![(item, changes)]);
            }
        }
    }
    requests
}

#[cfg(test)]
mod tests {
    use aws_sdk_route53::types::{ResourceRecord, RrType};

    use super::*;

    fn a_change(action: ChangeAction, values: &[&str]) -> Change {
        let records = values.iter().map(|v| ResourceRecord::builder().value(*v).build().unwrap()).collect();
        let set = ResourceRecordSet::builder()
            .name("app.example.test.")
            .r#type(RrType::A)
            .ttl(60)
            .set_resource_records(Some(records))
            .build()
            .unwrap();
        change(action, set).unwrap()
    }

    #[test]
    fn requests_stay_within_route53_limits_counting_an_upsert_twice() {
        let group = || {
            vec![
                a_change(ChangeAction::Delete, &["\"group=g epoch=1 active=east\""]),
                a_change(ChangeAction::Create, &["\"group=g epoch=2 active=west\""]),
                a_change(ChangeAction::Upsert, &["198.51.100.7", "198.51.100.8"]),
            ]
        };
        // 1 + 1 + 2 × 2 = 6 records a group: 166 groups a request.
        assert_eq!(cost(&group()), (6, 29 + 29 + 2 * 24));
        let requests = within_limits((0..500).map(|i| (i, group())).collect());
        let sizes: Vec<usize> = requests.iter().map(Vec::len).collect();
        assert_eq!(sizes, [166, 166, 166, 2]);
        let order: Vec<i32> = requests.iter().flatten().map(|(i, _)| *i).collect();
        assert_eq!(order, (0..500).collect::<Vec<_>>(), "in order, none lost");

        // Long values: the characters bind first (32,000 / (2 × 1,000) = 16 a request).
        let long = "x".repeat(1000);
        let requests = within_limits((0..40).map(|i| (i, vec![a_change(ChangeAction::Upsert, &[&long])])).collect());
        assert_eq!(requests.iter().map(Vec::len).collect::<Vec<_>>(), [16, 16, 8]);
        // A step too big on its own still goes (Route 53 names what is wrong with it).
        let huge = "y".repeat(40_000);
        let requests = within_limits(vec![(0, vec![a_change(ChangeAction::Create, &[&huge])]), (1, group())]);
        assert_eq!(requests.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1]);
    }
}
