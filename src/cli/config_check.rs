//! `witness config check --config FILE`: validate (the file and the secret files it names) and
//! print every problem, or a summary.

use std::path::PathBuf;

use super::Exit;
use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// Path to the node's TOML config file.
    #[arg(long)]
    config: PathBuf,
}

pub fn run(args: Args) -> Exit {
    match Config::load(&args.config) {
        Ok(c) => {
            let (errors, warnings) = crate::actions::secrets::audit(&c);
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            if !errors.is_empty() {
                for e in &errors {
                    eprintln!("error: {e}");
                }
                return Exit::Usage;
            }
            println!(
                "{}: OK (node {}, cluster {:?}, {} initial member(s), {} site(s), {} group(s))",
                args.config.display(),
                c.node.id,
                c.cluster.name,
                c.cluster.initial_members.len(),
                c.sites.len(),
                c.groups.len()
            );
            Exit::Ok
        }
        Err(e) => {
            eprintln!("{e}");
            Exit::Usage
        }
    }
}
