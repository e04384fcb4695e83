//! `witness token new --name NAME --role ROLE [--out FILE]`: a new API token and the `[[token]]`
//! block for the config; `witness token hash`: the config hash of a token read from stdin.
//!
//! The config holds only hashes, so the token is shown (or written) once, here, and never again.

use std::fs::OpenOptions;
use std::io::{BufRead, ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::Exit;
use crate::config::auth::{format_hash, hash_token, new_token, Role};

#[derive(Subcommand)]
pub enum Command {
    /// Make a token: prints the `[[token]]` block for every node's config, and the token itself.
    New {
        /// Who holds the token; recorded in the journal for every action taken with it.
        #[arg(long)]
        name: String,
        /// viewer, operator, admin, or site:NAME for a site agent.
        #[arg(long)]
        role: String,
        /// Write the token to this file (mode 0600, never overwritten) instead of printing it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Print the hash of the token on standard input, for a `[[token]]` block's `hash`.
    Hash,
}

pub fn run(command: Command) -> Exit {
    match command {
        Command::New { name, role, out } => new(&name, &role, out),
        Command::Hash => hash(),
    }
}

fn new(name: &str, role: &str, out: Option<PathBuf>) -> Exit {
    if let Err(e) = crate::config::check_name(name) {
        return usage(e);
    }
    let role = match Role::parse(role) {
        Ok(role) => role,
        Err(e) => return usage(e),
    };
    // The site must be a name the config can hold, or the block would be refused on load.
    if let Role::Site(site) = &role {
        if let Err(e) = crate::config::check_name(site) {
            return usage(format!("role site:{site}: {e}"));
        }
    }
    let token = new_token();
    // The file first: if it cannot be written, no block for a token nobody has gets printed.
    if let Some(path) = &out {
        if let Err(e) = write_secret(path, &token) {
            eprintln!("error: {e}");
            return Exit::Failed;
        }
    }
    // Name and role are checked to plain lowercase letters, digits, '-' and ':', so they need
    // no TOML escaping.
    println!("[[token]]");
    println!("name = \"{name}\"");
    println!("role = \"{role}\"");
    println!("hash = \"{}\"", format_hash(&hash_token(&token)));
    match &out {
        Some(path) => {
            println!("# the token is in {} (give it to the client; it is stored nowhere else)", path.display())
        }
        None => {
            println!("# the token (shown once; give it to the client, it is stored nowhere):");
            println!("{token}");
        }
    }
    Exit::Ok
}

/// Created with mode 0600 from the start, and only when new: overwriting could destroy the only
/// copy of a token that is in use.
fn write_secret(path: &Path, token: &str) -> Result<(), String> {
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| {
        if e.kind() == ErrorKind::AlreadyExists {
            format!("{} already exists; refusing to overwrite it", path.display())
        } else {
            format!("creating {}: {e}", path.display())
        }
    })?;
    file.write_all(format!("{token}\n").as_bytes()).and_then(|()| file.sync_all()).map_err(|e| {
        // A truncated token would fail every request with no hint why.
        let _ = std::fs::remove_file(path);
        format!("writing {}: {e}", path.display())
    })
}

fn hash() -> Exit {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
        eprintln!("error: reading standard input: {e}");
        return Exit::Failed;
    }
    let token = line.trim();
    if token.is_empty() {
        return usage("no token on standard input");
    }
    println!("{}", format_hash(&hash_token(token)));
    Exit::Ok
}

fn usage(e: impl std::fmt::Display) -> Exit {
    eprintln!("error: {e}");
    Exit::Usage
}
