//! `tandem artifact`: boot files stored by sha256 on every node.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::output::{fail, print_json};
use crate::api::client::Client;
use crate::api::dto::{ArtifactDto, OkDto};

#[derive(Subcommand, Debug)]
pub enum ArtifactCmd {
    /// Upload FILE to the leader; every node then fetches and serves it.
    Put {
        file: PathBuf,
        /// The name clients ask for (default: FILE's file name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Every artifact with its size, sha256 and the nodes that hold it.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove the name; every node deletes the bytes no name refers to.
    Rm { name: String },
}

/// Runs `tandem artifact CMD` through `client`.
pub fn run(client: &Client, cmd: &ArtifactCmd) -> ExitCode {
    match cmd {
        ArtifactCmd::Put { file, name } => {
            let Some(name) = name
                .clone()
                .or_else(|| file.file_name()?.to_str().map(str::to_owned))
            else {
                eprintln!("tandem: {} has no file name; give --name", file.display());
                return ExitCode::from(2);
            };
            if let Err(e) = crate::model::validate_name(&name) {
                eprintln!("tandem: {e}");
                return ExitCode::from(2);
            }
            match client.put_file(&name, file) {
                Ok(a) => {
                    println!("{}  {}  {} bytes", a.name, a.sha256, a.size);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        ArtifactCmd::List { json } => match client.get::<Vec<ArtifactDto>>("/v1/artifacts") {
            Ok(l) if *json => {
                print_json(&l);
                ExitCode::SUCCESS
            }
            Ok(l) => {
                println!("{:<32} {:>12}  {:<64}  HOLDERS", "NAME", "SIZE", "SHA256");
                for a in &l {
                    let h: Vec<String> = a.holders.iter().map(u64::to_string).collect();
                    println!(
                        "{:<32} {:>12}  {}  {}",
                        a.name,
                        a.size,
                        a.sha256,
                        h.join(",")
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        ArtifactCmd::Rm { name } => {
            match client.delete::<OkDto>(&format!("/v1/artifacts/{name}")) {
                Ok(ok) => {
                    println!("{}", ok.message);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
    }
}
