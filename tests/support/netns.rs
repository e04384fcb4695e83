//! A private network for chaos tests: one network namespace per host (witness node or site),
//! each joined by a veth pair to a bridge in a hub namespace, plus one veth from the test's
//! own namespace so the test can watch every host. Faults are iptables rules inside a host's
//! namespace and signals to its process. Everything is created under one prefix and removed on
//! drop (and any leftover of an earlier, killed run is removed first).
//!
//! Needs root, `ip` (iproute2) and `iptables`; [`Net::available`] says why not when it cannot.

use std::path::Path;
use std::process::{Child, Command, Stdio};

const PREFIX: &str = "wchaos";
/// The test's own address on the bridge.
pub const OBSERVER: &str = "10.77.0.254";

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn must(args: &[&str]) {
    run(args).unwrap_or_else(|e| panic!("{e}"));
}

/// One host: its namespace and address.
#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    pub ns: String,
    pub ip: String,
}

pub struct Net {
    pub hosts: Vec<Host>,
}

impl Net {
    /// Why chaos tests cannot run here, if they cannot.
    pub fn available() -> Result<(), String> {
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root (network namespaces and iptables need it)".into());
        }
        run(&["ip", "netns", "list"])?;
        run(&["iptables", "--version"])
    }

    /// Hosts `names`, given 10.77.0.1, .2, … in order.
    pub fn new(names: &[&str]) -> Net {
        cleanup();
        let hub = format!("{PREFIX}-hub");
        must(&["ip", "netns", "add", &hub]);
        must(&["ip", "-n", &hub, "link", "add", "br0", "type", "bridge"]);
        must(&["ip", "-n", &hub, "link", "set", "br0", "up"]);
        // The observer: the test's namespace on the bridge.
        must(&["ip", "link", "add", &format!("{PREFIX}0"), "type", "veth", "peer", "name", "obs", "netns", &hub]);
        must(&["ip", "-n", &hub, "link", "set", "obs", "master", "br0", "up"]);
        must(&["ip", "addr", "add", &format!("{OBSERVER}/24"), "dev", &format!("{PREFIX}0")]);
        must(&["ip", "link", "set", &format!("{PREFIX}0"), "up"]);
        let mut hosts = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let ns = format!("{PREFIX}-{name}");
            let ip = format!("10.77.0.{}", i + 1);
            let port = format!("p{}", i + 1);
            must(&["ip", "netns", "add", &ns]);
            must(&["ip", "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
            must(&["ip", "-n", &hub, "link", "set", &port, "master", "br0", "up"]);
            must(&["ip", "-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            hosts.push(Host { name: name.to_string(), ns, ip });
        }
        Net { hosts }
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).unwrap_or_else(|| panic!("no host {name}"))
    }

    /// Runs `program args` inside `host`'s namespace, output appended to `log`.
    pub fn spawn(&self, host: &str, program: &Path, args: &[&str], log: &Path) -> Child {
        let log = std::fs::File::options().create(true).append(true).open(log).expect("log file");
        Command::new("ip")
            .args(["netns", "exec", &self.host(host).ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn in namespace")
    }

    fn iptables(&self, host: &str, rule: &[&str]) {
        let ns = &self.host(host).ns;
        let mut args = vec!["ip", "netns", "exec", ns, "iptables", "-w"];
        args.extend_from_slice(rule);
        must(&args);
    }

    /// `a` and `b` cannot reach each other (both directions, dropped silently).
    pub fn partition(&self, a: &str, b: &str) {
        self.drop_from(a, b);
        self.drop_from(b, a);
    }

    /// `host` drops every packet arriving from `from`: traffic from `from` to `host` is lost,
    /// and so are the answers to anything `host` sends `from` (one-way loss seen from `from`).
    pub fn drop_from(&self, host: &str, from: &str) {
        let ip = self.host(from).ip.clone();
        self.iptables(host, &["-A", "INPUT", "-s", &ip, "-j", "DROP"]);
    }

    /// `host` drops what `from` sends to its TCP `port`: `from` can no longer connect there
    /// (nor use a connection it has), while `host`'s own connections to `from` work on.
    pub fn refuse_port(&self, host: &str, from: &str, port: u16) {
        let ip = self.host(from).ip.clone();
        let port = port.to_string();
        self.iptables(host, &["-A", "INPUT", "-s", &ip, "-p", "tcp", "--dport", &port, "-j", "DROP"]);
    }

    /// `host` loses a share `p` of the packets it receives from `from`.
    pub fn lose_from(&self, host: &str, from: &str, p: f64) {
        let ip = self.host(from).ip.clone();
        let p = format!("{p}");
        self.iptables(
            host,
            &["-A", "INPUT", "-s", &ip, "-m", "statistic", "--mode", "random", "--probability", &p, "-j", "DROP"],
        );
    }

    /// Removes every fault rule of every host.
    pub fn heal(&self) {
        for h in &self.hosts {
            self.iptables(&h.name, &["-F", "INPUT"]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        cleanup();
    }
}

/// Removes every namespace and link this harness may have made, whoever made them.
fn cleanup() {
    let _ = run(&["ip", "link", "del", &format!("{PREFIX}0")]);
    let out = Command::new("ip").args(["netns", "list"]).output().map(|o| o.stdout).unwrap_or_default();
    for line in String::from_utf8_lossy(&out).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if name.starts_with(PREFIX) {
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
}
