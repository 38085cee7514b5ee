//! `tandem artifact`: boot files stored by sha256 on every node.

use std::path::PathBuf;

use clap::Subcommand;

use super::output::{CliError, Done, Out};
use super::reach::{Kind, Reach};
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
    List,
    /// Remove the name; every node deletes the bytes no name refers to.
    Rm { name: String },
}

/// Runs `tandem artifact CMD`. An upload is bounded by its progress (a
/// stall of 30 s fails it), not by `--timeout`, which bounds finding the
/// leader.
pub fn run(r: &Reach, out: Out, cmd: &ArtifactCmd) -> Done {
    match cmd {
        ArtifactCmd::Put { file, name } => {
            let Some(name) = name
                .clone()
                .or_else(|| file.file_name()?.to_str().map(str::to_owned))
            else {
                return Err(CliError::usage(
                    format!("{} has no file name", file.display()),
                    Some("give --name NAME"),
                ));
            };
            crate::model::validate_name(&name)
                .map_err(|e| CliError::usage(e.to_string(), Some("give another --name")))?;
            let a: ArtifactDto = r.call(Kind::Leader, |c| c.put_file(&name, file))?;
            out.show(&a, |a| {
                println!("{}  {}  {} bytes", a.name, a.sha256, a.size);
            });
        }
        ArtifactCmd::List => {
            let l: Vec<ArtifactDto> = r.read("/v1/artifacts")?;
            out.show(&l, |l| {
                println!("{:<32} {:>12}  {:<64}  HOLDERS", "NAME", "SIZE", "SHA256");
                for a in l {
                    let h: Vec<String> = a.holders.iter().map(u64::to_string).collect();
                    println!(
                        "{:<32} {:>12}  {}  {}",
                        a.name,
                        a.size,
                        a.sha256,
                        h.join(",")
                    );
                }
            });
        }
        ArtifactCmd::Rm { name } => {
            let path = format!("/v1/artifacts/{name}");
            let ok: OkDto = r.call(Kind::Leader, |c| c.delete(&path))?;
            out.show(&ok, |ok| println!("{}", ok.message));
        }
    }
    Ok(())
}
