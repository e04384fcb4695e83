//! The `openstorage` step against the cluster-domains fake (real domain state, bearer token
//! demanded): the token is required, activation is awaited, a re-run is harmless, and an
//! unreachable failed domain is passed over only when the step says so.

mod support;

use std::collections::BTreeMap;

use support::targets::OpenStorage;
use witness::actions::{openstorage, StepContext};
use witness::config::OpenStorageStep;

fn step(endpoint: &str, token_file: std::path::PathBuf, tolerate: bool) -> OpenStorageStep {
    OpenStorageStep {
        endpoint: endpoint.parse().unwrap(),
        token_file: Some(token_file),
        domains: BTreeMap::from([
            ("east".to_string(), "dc-east".to_string()),
            ("west".to_string(), "dc-west".to_string()),
        ]),
        tolerate_unreachable_failed: tolerate,
    }
}

fn ctx() -> StepContext {
    StepContext {
        group: "app".into(),
        epoch: 2,
        from: "east".into(),
        to: "west".into(),
        reason: "east down".into(),
        decided_at_ms: 0,
        step: "storage".into(),
    }
}

#[tokio::test]
async fn domains_move_with_the_token_and_only_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = (dir.path().join("good"), dir.path().join("bad"));
    std::fs::write(&good, "admin-token\n").unwrap();
    std::fs::write(&bad, "viewer-token\n").unwrap();
    let fake = OpenStorage::start("admin-token", &[("dc-east", true), ("dc-west", false)]).await.unwrap();
    witness::tls::init();
    let http = reqwest::Client::new();

    let refused = openstorage::run(&http, &step(&fake.url, bad.clone(), false), &ctx()).await.unwrap_err();
    assert!(!refused.retryable && refused.message.contains("401"), "{refused:?}");
    assert!(openstorage::check(&http, &step(&fake.url, bad, false)).await.is_err());
    assert!(fake.calls().is_empty(), "nothing changed without the token");

    let done = openstorage::run(&http, &step(&fake.url, good.clone(), false), &ctx()).await.unwrap();
    assert!(done.contains("dc-west activated and inspected active"), "{done}");
    assert_eq!((fake.active("dc-east"), fake.active("dc-west")), (Some(false), Some(true)));
    // Again (a new leader re-running it): the same end state.
    openstorage::run(&http, &step(&fake.url, good.clone(), false), &ctx()).await.unwrap();
    assert_eq!((fake.active("dc-east"), fake.active("dc-west")), (Some(false), Some(true)));
    let checked = openstorage::check(&http, &step(&fake.url, good, false)).await.unwrap();
    assert!(checked.contains("dc-east") && checked.contains("dc-west"), "{checked}");
}

#[tokio::test]
async fn an_unreachable_failed_domain_is_passed_over_only_when_tolerated() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    let fake = OpenStorage::start("t", &[("dc-east", true), ("dc-west", false)]).await.unwrap();
    fake.fail_deactivation(true);
    witness::tls::init();
    let http = reqwest::Client::new();

    let strict = openstorage::run(&http, &step(&fake.url, token.clone(), false), &ctx()).await.unwrap_err();
    assert!(strict.retryable && strict.message.contains("503"), "{strict:?}");
    assert_eq!(fake.active("dc-west"), Some(false), "the survivor is not activated past a failed deactivation");

    let tolerant = openstorage::run(&http, &step(&fake.url, token, true), &ctx()).await.unwrap();
    assert!(tolerant.contains("not deactivated") && tolerant.contains("tolerated"), "{tolerant}");
    assert_eq!(fake.active("dc-west"), Some(true));
}
