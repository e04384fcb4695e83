//! Automatic failover end to end, with real processes: three witness nodes probe two site
//! stubs over HTTP; kill the primary's stub and the witness fails over; kill a witness node
//! instead and nothing moves.

mod support;

use std::time::{Duration, Instant};

use support::{eventually, Cluster, Setup, SiteStub};

async fn cluster_watching(east: &SiteStub, west: &SiteStub) -> (Cluster, u64) {
    let setup = Setup { site_urls: Some((east.url(), west.url())), ..Setup::default() };
    let mut c = Cluster::with(3, 0, setup);
    let leader = c.start_voters(3).await;
    eventually(Duration::from_secs(15), "every node sees both sites up", || async {
        c.all_see("east", "up", &[1, 2, 3]).await?;
        c.all_see("west", "up", &[1, 2, 3]).await
    })
    .await;
    (c, leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_site_dies_and_the_witness_fails_over_once() {
    let mut east = SiteStub::start().await;
    let west = SiteStub::start().await;
    let (c, leader) = cluster_watching(&east, &west).await;
    assert_eq!(c.group(leader).await, Some(("east".to_string(), 1)));

    east.kill().await;
    let killed = Instant::now();
    let (_, epoch) = eventually(Duration::from_secs(15), "failover to west", || async {
        c.group(leader).await.filter(|(active, _)| active == "west")
    })
    .await;
    let took = killed.elapsed();
    // Budget: detection 2 x 200 ms + 150 ms timeout, hold-down 500 ms, reporting and commit.
    eprintln!("failover committed {took:?} after the primary's site stub died");
    assert!(took < Duration::from_secs(5), "failover took {took:?}");
    assert_eq!(epoch, 2, "exactly one failover");
    let s = c.status(leader).await.unwrap();
    let group = &s["groups"][0];
    assert_eq!(group["blocked"], true, "a failover blocks the group: {s}");

    // The old primary comes back: it stays standby (no automatic failback), on every node.
    east.restart().await;
    eventually(Duration::from_secs(10), "east seen up again", || c.all_see("east", "up", &[1, 2, 3])).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for id in 1..=3 {
        assert_eq!(c.group(id).await, Some(("west".to_string(), 2)), "node {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_witness_node_moves_nothing() {
    let east = SiteStub::start().await;
    let west = SiteStub::start().await;
    let (mut c, leader) = cluster_watching(&east, &west).await;
    let victim = (1..=3).find(|id| *id != leader).unwrap();
    c.node(victim).kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in (1..=3).filter(|id| *id != victim) {
        assert_eq!(c.group(id).await, Some(("east".to_string(), 1)), "node {id}");
    }
}
