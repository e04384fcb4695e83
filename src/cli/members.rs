//! `witness members [add ID ADDR | remove ID]`: list or change the voters, through the leader.

use std::time::Duration;

use clap::Subcommand;

use super::client::{Client, Endpoint};
use super::status::table;
use super::Exit;
use crate::node::leader::LeaderReply;
use crate::node::status::Member;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    endpoint: Endpoint,
    #[command(subcommand)]
    command: Option<MembersCommand>,
}

#[derive(Subcommand)]
enum MembersCommand {
    /// List members (the default).
    List,
    /// Add a node: it joins as a learner, catches up, then becomes a voter.
    Add {
        /// The new node's id (never one that was removed before).
        id: u64,
        /// The new node's advertised host:port.
        addr: String,
    },
    /// Remove a node from the voters and the cluster. Its id can never be reused.
    Remove { id: u64 },
}

pub async fn run(args: Args) -> Exit {
    // Adding waits for the learner to catch up.
    let client = match Client::new(&args.endpoint, Duration::from_secs(150)) {
        Ok(c) => c,
        Err(e) => return e.report(),
    };
    let result =
        match args.command.unwrap_or(MembersCommand::List) {
            MembersCommand::List => match client.get::<Vec<Member>>("/v1/members").await {
                Ok(members) => {
                    let mut rows = vec![vec!["ID".to_string(), "ADDRESS".into(), "ROLE".into()]];
                    rows.extend(members.iter().map(|m| {
                        vec![m.id.to_string(), m.addr.clone(), if m.voter { "voter" } else { "learner" }.into()]
                    }));
                    print!("{}", table(&rows));
                    return Exit::Ok;
                }
                Err(e) => Err(e),
            },
            MembersCommand::Add { id, addr } => {
                client.post::<LeaderReply>("/v1/members", &serde_json::json!({ "id": id, "addr": addr })).await
            }
            MembersCommand::Remove { id } => client.delete::<LeaderReply>(&format!("/v1/members/{id}")).await,
        };
    match result {
        Ok(LeaderReply::Membership { voters, learners, .. }) => {
            println!("voters: {voters:?}  learners: {learners:?}");
            Exit::Ok
        }
        Ok(other) => {
            eprintln!("error: unexpected answer {other:?}");
            Exit::Failed
        }
        Err(e) => e.report(),
    }
}
