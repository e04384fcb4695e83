//! `witness gen-certs --out DIR --nodes N [--sites A,B] [--hosts H,...] [--site-hosts A=H,...]`:
//! a CA and a certificate for every node and site; `--add NAME,...` issues more (or replaces
//! them) with the CA in DIR.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::Exit;
use crate::tls::certs;

#[derive(clap::Args)]
pub struct Args {
    /// Directory for the PEM files; created when missing. Existing files are never overwritten,
    /// except the ones `--add` names.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// How many nodes: certificates node-1 .. node-N.
    #[arg(long, value_name = "N", required_unless_present = "add", value_parser = clap::value_parser!(u64).range(1..))]
    nodes: Option<u64>,
    /// Site names, comma-separated: a certificate site-NAME for each site's agent.
    #[arg(long, value_name = "NAME,...", value_delimiter = ',')]
    sites: Vec<String>,
    /// More DNS names or IP addresses every certificate is valid for, comma-separated (each
    /// certificate always holds its own name, localhost, 127.0.0.1 and ::1).
    #[arg(long, value_name = "HOST,...", value_delimiter = ',')]
    hosts: Vec<String>,
    /// The DNS names or IP addresses one site's agent is reached by (the other site's agent
    /// dials it for peer leases): `east=10.1.0.5,agent.east.example`. Once per site.
    #[arg(long, value_name = "SITE=HOST,...", conflicts_with = "add")]
    site_hosts: Vec<String>,
    /// Issue only these certificates (e.g. node-4, site-north) with the CA already in DIR,
    /// replacing existing ones: to add a node or a site, or to rotate a certificate.
    #[arg(long, value_name = "NAME,...", value_delimiter = ',', conflicts_with_all = ["nodes", "sites"])]
    add: Vec<String>,
}

pub fn run(args: Args) -> Exit {
    // Checked here as well as in `certs` so that a typo is a usage error (exit 2), not a
    // failed operation.
    let names: Vec<String> = if args.add.is_empty() {
        let nodes = (1..=args.nodes.unwrap_or(0)).map(|n| format!("node-{n}"));
        nodes.chain(args.sites.iter().map(|s| format!("site-{s}"))).collect()
    } else {
        args.add.clone()
    };
    for (i, name) in names.iter().enumerate() {
        if let Err(e) = certs::check_name(name) {
            return usage(e);
        }
        if names[..i].contains(name) {
            return usage(format!("{name} is asked for twice"));
        }
    }
    let mut site_hosts = BTreeMap::new();
    for given in &args.site_hosts {
        let Some((site, hosts)) = given.split_once('=') else {
            return usage(format!("--site-hosts {given:?}: expected SITE=HOST,... (e.g. east=10.1.0.5)"));
        };
        if !args.sites.iter().any(|s| s == site) {
            return usage(format!("--site-hosts {given:?}: {site:?} is not one of --sites"));
        }
        let hosts: Vec<String> = hosts.split(',').map(str::to_string).collect();
        if site_hosts.insert(site.to_string(), hosts).is_some() {
            return usage(format!("--site-hosts names site {site:?} twice; list its hosts in one"));
        }
    }
    for host in args.hosts.iter().chain(site_hosts.values().flatten()) {
        if let Err(e) = certs::check_host(host) {
            return usage(e);
        }
    }

    if !args.add.is_empty() {
        return add(&args.out, &args.add, &args.hosts);
    }
    let nodes: Vec<u64> = (1..=args.nodes.unwrap_or(0)).collect();
    match certs::generate(&args.out, &nodes, &args.sites, &args.hosts, &site_hosts) {
        Ok(written) => {
            for path in &written {
                println!("wrote {}", path.display());
            }
            let dir = args.out.display();
            println!();
            println!("Next:");
            for n in &nodes {
                println!("  node {n}: copy {dir}/node-{n}.crt, {dir}/node-{n}.key and {dir}/ca.crt to it");
            }
            for site in &args.sites {
                println!("  site {site}'s agent: {dir}/site-{site}.crt, {dir}/site-{site}.key and {dir}/ca.crt");
            }
            for site in args.sites.iter().filter(|s| !site_hosts.contains_key(*s)) {
                println!(
                    "  warning: site-{site}.crt covers no address of its own agent (--site-hosts {site}=ADDRESS): \
                     the other site's agent cannot verify it when dialling it for peer leases, and the active \
                     site then holds no peer lease"
                );
            }
            println!(
                "  {dir}/ca.key signs new certificates (`witness gen-certs --out {dir} --add node-{}`): keep it \
                 offline, on no node",
                nodes.len() + 1
            );
            Exit::Ok
        }
        Err(e) => failed(e),
    }
}

fn add(dir: &Path, names: &[String], hosts: &[String]) -> Exit {
    for name in names {
        match certs::issue(dir, name, hosts) {
            Ok(written) => {
                for path in &written {
                    println!("wrote {}", path.display());
                }
            }
            Err(e) => return failed(e),
        }
    }
    println!();
    println!("Copy each new NAME.crt and NAME.key, with {}/ca.crt, to where it is used.", dir.display());
    Exit::Ok
}

fn usage(e: impl std::fmt::Display) -> Exit {
    eprintln!("error: {e}");
    Exit::Usage
}

fn failed(e: anyhow::Error) -> Exit {
    eprintln!("error: {e:#}");
    Exit::Failed
}
