//! The dashboard in a real headless Chromium, driven over WebDriver (chromedriver): the page a
//! witness node serves over HTTPS loads, asks for a token, shows both sites with every node's
//! verdict and the group to a viewer (without operator buttons), shows the buttons to an
//! operator, and follows a failover within seconds of the primary's death without a reload;
//! with site agents, a killed agent shows as silent with when it was last heard, and the
//! automation switch turned off shows; with 120 groups, the counts by state come first, a page
//! of at most 50 rows is drawn with the group that failed over first, and filters by name and
//! state, kept in the address's hash, narrow it and survive a reload.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{eventually, Cluster, Setup, SiteStub};

struct Driver {
    child: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Drop for Driver {
    /// Chromium and its helpers run in chromedriver's process group: all of it goes.
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this test created for chromedriver.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

impl Driver {
    /// `None` (after saying so) when Chromium or chromedriver is missing and skipping is allowed.
    async fn start() -> Option<Driver> {
        let find = |name: &str| {
            std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|p| p.is_file()))
        };
        let (Some(chromium), Some(chromedriver)) = (find("chromium"), find("chromedriver")) else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "chromium is required in CI: scripts/test installs it"
            );
            eprintln!(
                "SKIPPED dashboard test: no chromium/chromedriver (install Debian's chromium and chromium-driver)"
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        use std::os::unix::process::CommandExt;
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        witness::tls::init();
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let mut driver = Driver { child, base, session: String::new(), http };
        let caps = json!({ "capabilities": { "alwaysMatch": { "browserName": "chrome", "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
                     // The test CA is not in Chromium's store; what is tested is the page.
                     "--ignore-certificate-errors"]
        }}}});
        let session = eventually(Duration::from_secs(30), "a WebDriver session", || async {
            let r = driver.http.post(format!("{}/session", driver.base)).json(&caps).send().await.ok()?;
            let v: Value = r.json().await.ok()?;
            v["value"]["sessionId"].as_str().map(str::to_string)
        })
        .await;
        driver.session = session;
        Some(driver)
    }

    async fn call(&self, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}/{path}", self.base, self.session);
        let v: Value = self.http.post(url).json(&body).send().await.unwrap().json().await.unwrap();
        v["value"].clone()
    }

    /// Enters the test token `name` in the page's token field.
    async fn sign_in(&self, name: &str) {
        let token = support::creds().token(name);
        let script = format!(
            "document.getElementById('token').value = {token:?}; document.querySelector('#login button').click();"
        );
        self.script(&script).await;
    }

    async fn script(&self, script: &str) -> Value {
        self.call("execute/sync", json!({ "script": script, "args": [] })).await
    }

    /// The text of the first element `selector` matches (None: none does).
    async fn text(&self, selector: &str) -> Option<String> {
        let script = format!("const e = document.querySelector({selector:?}); return e && e.textContent");
        self.script(&script).await.as_str().map(str::to_string)
    }

    /// Clicks the first element `selector` matches, as a script (the element exists).
    async fn click(&self, selector: &str) {
        self.script(&format!("document.querySelector({selector:?}).click()")).await;
    }

    /// Types `text` into the field `selector` matches with real key presses, after clearing it.
    async fn type_into(&self, selector: &str, text: &str) {
        let found = self.call("element", json!({ "using": "css selector", "value": selector })).await;
        let id = found.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).expect("element found");
        self.call(&format!("element/{id}/clear"), json!({})).await;
        self.call(&format!("element/{id}/value"), json!({ "text": text })).await;
    }

    /// The groups the groups table has a row for, in order.
    async fn rows(&self) -> Vec<String> {
        let rows = self
            .script("return [...document.querySelectorAll('#groups tr[data-group]')].map((r) => r.dataset.group)")
            .await;
        serde_json::from_value(rows).unwrap_or_default()
    }

    /// The page's address after the `#` (empty: none).
    async fn hash(&self) -> String {
        self.script("return decodeURIComponent(location.hash.slice(1))").await.as_str().unwrap_or_default().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_both_sites_and_follows_a_failover_live() {
    let Some(browser) = Driver::start().await else { return };
    let mut east = SiteStub::start().await;
    let west = SiteStub::start().await;
    let (c, leader) = Cluster::watching(&east, &west, Setup::default()).await;

    browser.call("url", json!({ "url": c.nodes[1].url("/") })).await;
    eventually(Duration::from_secs(15), "the page asks for a token", || async {
        let text = browser.script("return document.body.innerText").await;
        text.as_str()?.contains("only to a token with role viewer").then_some(())
    })
    .await;
    browser.sign_in("viewer").await;
    // The status as rendered (the group's row), not just the live timeline, which also names
    // the sites, the group and the nodes.
    let text = eventually(Duration::from_secs(15), "the page shows both sites and the group", || async {
        let rendered = browser.script("return document.querySelector('#groups .active-site') !== null").await;
        let text = browser.script("return document.body.innerText").await;
        let text = text.as_str()?.to_string();
        (rendered == json!(true)
            && text.contains("east")
            && text.contains("west")
            && text.contains("app")
            && text.contains("node 3"))
        .then_some(text)
    })
    .await;
    let verdicts = browser.script("return [...document.querySelectorAll('#sites .up')].length").await;
    assert_eq!(verdicts, json!(6), "2 sites x 3 nodes up:\n{text}");
    assert_eq!(browser.script("return document.querySelector('#groups .active-site').textContent").await, "east");
    assert!(text.contains("token:viewer (viewer)"), "{text}");
    assert!(text.contains("link from node 2"), "the members table shows node 2's links: {text}");
    assert_eq!(browser.script("return document.querySelectorAll('#controls button').length").await, json!(0));
    assert!(text.contains("Read-only"), "{text}");

    browser.sign_in("operator").await;
    eventually(Duration::from_secs(10), "operator buttons", || async {
        let buttons = browser.script("return document.querySelectorAll('#controls button').length").await;
        (buttons.as_u64()? >= 4).then_some(())
    })
    .await;
    // A dry run from the page goes through with the operator's token and changes nothing.
    browser.script("document.querySelector('#controls button[data-act=failover]').click()").await;
    eventually(Duration::from_secs(10), "the dry run's answer", || async {
        let message = browser.script("return document.getElementById('message').textContent").await;
        message.as_str()?.contains("HTTP 200").then_some(())
    })
    .await;

    // A drill there and back (no agents, no steps: each leg is done at its decision): the
    // group's row says it passed.
    let (code, body) = c.post(leader, "/v1/groups/app/drill", &json!({ "back_after_ms": 0, "reason": "page" })).await;
    assert_eq!(code, 200, "{body}");
    eventually(Duration::from_secs(15), "the page shows the drill passed", || async {
        let text = browser.script("return document.getElementById('groups').innerText").await;
        let text = text.as_str()?.to_string();
        (text.contains("drill passed") && text.contains("east → west and back")).then_some(())
    })
    .await;

    east.kill().await;
    let killed = Instant::now();
    eventually(Duration::from_secs(15), "the page shows the failover", || async {
        let active = browser.script("return document.querySelector('#groups .active-site').textContent").await;
        let timeline = browser.script("return document.getElementById('events').innerText").await;
        (active == "west" && timeline.as_str()?.contains("failover east -> west")).then_some(())
    })
    .await;
    eprintln!("the dashboard showed the failover {:?} after the primary died", killed.elapsed());
    let down = browser.script("return [...document.querySelectorAll('#sites .down')].length").await;
    assert!(down.as_u64().unwrap_or(0) >= 2, "a quorum's east verdicts shown down: {down}");
    let _ = browser.http.delete(format!("{}/session/{}", browser.base, browser.session)).send().await;
}

/// The text of the groups table's agents cell for group `app` (the fifth column).
const AGENTS_CELL: &str = "return document.querySelector('#groups tr:nth-child(2) td:nth-child(5)').innerHTML";

/// With site agents, on a follower's page (which asks the leader for what only it knows): both
/// agents shown by role with when each was last heard; a killed agent turns "silent" with its
/// age growing, never a green "active"; automation off shows `#automation-off`, and on again
/// hides it; the members table has the leader's links beside the follower's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_dead_agent_as_silent_and_automation_off() {
    let Some(browser) = Driver::start().await else { return };
    let (east, west) = (SiteStub::start().await, SiteStub::start().await);
    let (mut c, leader) = support::cluster_with_agents(&east, &west).await;
    let follower = if leader == 1 { 2 } else { 1 };

    browser.call("url", json!({ "url": c.nodes[follower as usize - 1].url("/") })).await;
    browser.sign_in("viewer").await;
    let cell = eventually(Duration::from_secs(15), "both agents heard", || async {
        let cell = browser.script(AGENTS_CELL).await.as_str()?.to_string();
        (cell.contains(r#"east: <span class="active">active</span>"#)
            && cell.contains(r#"west: <span class="standby">standby</span>"#)
            && cell.matches("heard 0.").count() == 2)
            .then_some(cell)
    })
    .await;
    assert!(!cell.contains("silent"), "{cell}");
    let members = browser.script("return document.getElementById('members').innerText").await;
    assert!(members.as_str().unwrap().contains("link from the leader"), "{members}");
    assert_eq!(browser.script("return document.getElementById('automation-off')").await, Value::Null);

    // East's agent dies: the leader stops hearing it, and the page says so rather than
    // showing the role it last reported as if it held.
    c.agent("east").kill9();
    let cell = eventually(Duration::from_secs(15), "east's agent silent, heard seconds ago", || async {
        let cell = browser.script(AGENTS_CELL).await.as_str()?.to_string();
        let east = cell.split("<br>").find(|l| l.starts_with("east:"))?.to_string();
        let heard: f64 = east.split("heard ").nth(1)?.split(' ').next()?.parse().ok()?;
        (east.contains(r#"<span class="down">silent</span> (last said active)"#) && heard >= 2.0).then_some(cell)
    })
    .await;
    let east = cell.split("<br>").find(|l| l.starts_with("east:")).unwrap();
    assert!(!east.contains(r#"class="active""#), "a dead agent is not shown active: {cell}");
    assert!(cell.contains(r#"west: <span class="standby">standby</span>"#), "{cell}");

    let (code, body) = c.post(leader, "/v1/automation", &json!({ "enabled": false })).await;
    assert_eq!(code, 200, "{body}");
    let shown = eventually(Duration::from_secs(15), "automation off shown", || async {
        let text =
            browser.script("const e = document.getElementById('automation-off'); return e && e.textContent").await;
        text.as_str().map(str::to_string)
    })
    .await;
    assert!(shown.contains("automation off"), "{shown}");
    let (code, body) = c.post(leader, "/v1/automation", &json!({ "enabled": true })).await;
    assert_eq!(code, 200, "{body}");
    eventually(Duration::from_secs(15), "automation off no longer shown", || async {
        (browser.script("return document.getElementById('automation-off')").await == Value::Null).then_some(())
    })
    .await;
    let _ = browser.http.delete(format!("{}/session/{}", browser.base, browser.session)).send().await;
}

/// `[[group]]` tables for `billing-001`..`billing-060` and `orders-001`..`orders-059`, configured
/// as `app` is, for `Setup::plan` (the first `[[group]]` ends `app`'s table): 120 groups with it.
fn many_groups() -> String {
    let names = (1..=60).map(|i| format!("billing-{i:03}")).chain((1..=59).map(|i| format!("orders-{i:03}")));
    names
        .map(|name| {
            format!(
                "\n[[group]]\nname = \"{name}\"\nprimary = \"east\"\nsecondary = \"west\"\nreplication = \"sync\"\n\
                 rto = \"5m\"\nrpo = \"0s\"\nfailover = \"automatic\"\nhold_down = \"500ms\"\n"
            )
        })
        .collect()
}

/// With 120 groups the page stays readable: the counts by state first, at most 50 rows drawn
/// ("showing 1-50 of 120 (120 match)") with next and previous; a name pattern and a state (from
/// its count) narrow the rows and the match count; the filter lives in the address's hash, so a
/// reload, a pasted link and the periodic refresh keep it; a group failed over sorts first
/// although its name sorts last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_pages_and_filters_many_groups_with_trouble_first() {
    let Some(browser) = Driver::start().await else { return };
    let (east, west) = (SiteStub::start().await, SiteStub::start().await);
    let (c, leader) = Cluster::watching(&east, &west, Setup { plan: many_groups(), ..Setup::default() }).await;
    let shown = || browser.text("#group-shown");

    browser.call("url", json!({ "url": c.nodes[0].url("/") })).await;
    browser.sign_in("viewer").await;
    eventually(Duration::from_secs(15), "the counts of 120 groups, all on their primary", || async {
        (browser.text("#group-total").await? == "120 groups"
            && browser.text("#group-counts [data-state=on-primary]").await? == "120 on-primary"
            && shown().await? == "showing 1-50 of 120 (120 match)")
            .then_some(())
    })
    .await;
    let rows = browser.rows().await;
    assert_eq!(rows.len(), 50, "{rows:?}");
    assert_eq!(browser.script("return document.querySelectorAll('#groups tr').length").await, json!(51));
    assert_eq!((rows[0].as_str(), rows[49].as_str()), ("app", "billing-049"));
    assert_eq!(browser.text("#group-counts [data-state=failed-over]").await.unwrap(), "0 failed-over");
    assert_eq!(browser.hash().await, "");

    browser.click("#group-range button[data-page='2']").await;
    assert_eq!(shown().await.unwrap(), "showing 51-100 of 120 (120 match)");
    assert_eq!(browser.rows().await.first().map(String::as_str), Some("billing-050"));
    assert_eq!(browser.hash().await, "page=2");

    // A pattern as the CLI takes it, then a part of a name; either starts again at page 1.
    browser.type_into("#filter-name", "billing-00*").await;
    assert_eq!(shown().await.unwrap(), "showing 1-9 of 120 (9 match)");
    let billing: Vec<String> = (1..=9).map(|i| format!("billing-00{i}")).collect();
    assert_eq!(browser.rows().await, billing);
    assert_eq!(browser.hash().await, "name=billing-00*");
    browser.type_into("#filter-name", "orders-05").await;
    assert_eq!(shown().await.unwrap(), "showing 1-10 of 120 (10 match)");
    assert_eq!(browser.hash().await, "name=orders-05");

    // The filter survives a reload (the token is the tab's) and the page's refreshes.
    browser.type_into("#filter-name", "billing-00*").await;
    browser.call("refresh", json!({})).await;
    eventually(Duration::from_secs(15), "the reloaded page filtered as before", || async {
        (shown().await? == "showing 1-9 of 120 (9 match)").then_some(())
    })
    .await;
    assert_eq!(browser.script("return document.getElementById('filter-name').value").await, "billing-00*");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(browser.rows().await, billing, "refreshed twice since, still filtered");

    // An operator's forced failover of the group whose name sorts last.
    let operator = support::creds().client(Some("operator"));
    let body = json!({ "to": "west", "force": true, "reason": "dashboard test" });
    let r = operator.post(c.nodes[leader as usize - 1].url("/v1/groups/orders-059/failover")).json(&body).send().await;
    let r = r.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    eventually(Duration::from_secs(15), "the counts show the group failed over", || async {
        (browser.text("#group-counts [data-state=failed-over]").await? == "1 failed-over"
            && browser.text("#group-counts [data-state=on-primary]").await? == "119 on-primary")
            .then_some(())
    })
    .await;
    assert_eq!(browser.rows().await, billing, "the name filter still holds");
    browser.click("#filter-clear").await;
    assert_eq!(shown().await.unwrap(), "showing 1-50 of 120 (120 match)");
    let rows = browser.rows().await;
    assert_eq!((rows[0].as_str(), rows[1].as_str()), ("orders-059", "app"), "trouble first: {rows:?}");
    let first = "return document.querySelector('#groups tr[data-group]').className";
    assert_eq!(browser.script(first).await, "attention");
    assert_eq!(browser.hash().await, "");

    // Its state's count is a filter; with a name pattern too, nothing matches.
    browser.click("#group-counts [data-state=failed-over]").await;
    assert_eq!(shown().await.unwrap(), "showing 1-1 of 120 (1 match)");
    assert_eq!(browser.rows().await, ["orders-059"]);
    assert_eq!(browser.hash().await, "state=failed-over");
    assert_eq!(browser.script("return document.getElementById('filter-state').value").await, "failed-over");
    browser.type_into("#filter-name", "billing-*").await;
    assert_eq!(shown().await.unwrap(), "showing 0 of 120 (0 match)");
    assert!(browser.rows().await.is_empty());
    assert_eq!(browser.hash().await, "name=billing-*&state=failed-over");

    // A link pasted into the address bar (same page, another hash) applies its filter.
    browser.call("url", json!({ "url": c.nodes[0].url("/#state=on-primary&name=orders-*&page=2") })).await;
    eventually(Duration::from_secs(10), "the pasted link's filter", || async {
        (shown().await? == "showing 51-58 of 120 (58 match)").then_some(())
    })
    .await;
    assert_eq!(browser.rows().await.last().map(String::as_str), Some("orders-058"));
    assert_eq!(browser.script("return document.getElementById('filter-name').value").await, "orders-*");
    assert_eq!(browser.script("return document.getElementById('filter-state').value").await, "on-primary");
    let _ = browser.http.delete(format!("{}/session/{}", browser.base, browser.session)).send().await;
}
