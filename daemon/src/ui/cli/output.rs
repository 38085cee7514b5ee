//! What the CLI prints and how it exits (DESIGN.md section 4).
//!
//! One shape for every command: with `--json`, a result is one JSON value on
//! stdout (an object for one thing, an array for a list: the API's DTOs),
//! and a failure is `{"error": "...", "hint": "..." | null}` on stdout, usage
//! errors included. Without it, results are text on stdout and failures
//! `tandem: ERROR` (and `hint: HINT`) on stderr. Exit codes: 0 ok, 1 the
//! operation failed, 2 usage error, 3 no quorum or no leader reachable.

use std::process::ExitCode;

use serde::{Deserialize, Serialize};

use crate::api::client::ClientError;

/// Exit code: the operation failed.
pub const FAILED: u8 = 1;
/// Exit code: usage error (bad flags or arguments).
pub const USAGE: u8 = 2;
/// Exit code: no quorum or no leader reachable.
pub const NO_LEADER: u8 = 3;

/// A failed command: its exit code, what went wrong and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CliError {
    pub code: u8,
    pub error: String,
    pub hint: Option<String>,
}

/// The JSON of a failure (`--json`): both keys always present.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorOut {
    pub error: String,
    pub hint: Option<String>,
}

impl CliError {
    /// Exit 1.
    #[must_use]
    pub fn failed(error: impl Into<String>, hint: Option<&str>) -> CliError {
        CliError {
            code: FAILED,
            error: error.into(),
            hint: hint.map(str::to_owned),
        }
    }

    /// Exit 2.
    #[must_use]
    pub fn usage(error: impl Into<String>, hint: Option<&str>) -> CliError {
        CliError {
            code: USAGE,
            error: error.into(),
            hint: hint.map(str::to_owned),
        }
    }
}

impl From<ClientError> for CliError {
    /// Unreachable nodes and no leader are exit 3; anything the server
    /// refused is exit 1, with the server's hint if it gave one.
    fn from(e: ClientError) -> CliError {
        let error = e.to_string();
        let (code, hint) = match e {
            ClientError::Unreachable { .. } => (
                NO_LEADER,
                Some(
                    "is the node up? `tandem status` on it; --nodes a,b,c tries several, \
                     --timeout waits for one"
                        .to_owned(),
                ),
            ),
            ClientError::NoLeader(_) => (
                NO_LEADER,
                Some(
                    "a majority of the nodes must run and reach each other (`tandem status` on \
                     each); --timeout waits for a leader"
                        .to_owned(),
                ),
            ),
            ClientError::Failed { hint: Some(h), .. } => (FAILED, Some(h)),
            ClientError::Failed { status: 401, .. } => (
                FAILED,
                Some(
                    "run it on a member (the CLI reads <data_dir>/admin.token through --config), \
                     or give --token-file or TANDEM_TOKEN"
                        .to_owned(),
                ),
            ),
            ClientError::Failed { .. } | ClientError::Protocol { .. } => (FAILED, None),
        };
        CliError { code, error, hint }
    }
}

/// What a command returns: done (its output printed), or why not.
pub type Done = Result<(), CliError>;

/// How results and failures are printed: `--json` or text.
#[derive(Clone, Copy, Debug)]
pub struct Out {
    pub json: bool,
}

impl Out {
    /// Prints `v`: as JSON with `--json`, else as `text` renders it.
    pub fn show<T: Serialize>(self, v: &T, text: impl FnOnce(&T)) {
        if self.json {
            println!("{}", to_json(v));
        } else {
            text(v);
        }
    }

    /// The exit code of `r`, after printing the failure.
    #[must_use]
    pub fn finish(self, r: Done) -> ExitCode {
        match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                self.print_error(&e);
                ExitCode::from(e.code)
            }
        }
    }

    fn print_error(self, e: &CliError) {
        if self.json {
            println!(
                "{}",
                to_json(&ErrorOut {
                    error: e.error.clone(),
                    hint: e.hint.clone(),
                })
            );
        } else {
            eprintln!("tandem: {}", e.error);
            if let Some(h) = &e.hint {
                eprintln!("hint: {h}");
            }
        }
    }
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| {
        serde_json::json!({"error": format!("cannot render JSON: {e}"), "hint": null}).to_string()
    })
}

/// Whether the raw arguments ask for `--json` (before a `--`): for errors
/// clap found, before there is a parsed [`Out`].
#[must_use]
pub fn wants_json(args: &[std::ffi::OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}

/// A clap error as the CLI reports it: help and version print as clap
/// prints them (exit 0); a usage error is exit 2, as JSON with `--json`.
#[must_use]
pub fn usage_error(e: &clap::Error, json: bool) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) || !json {
        let _ = e.print();
        return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(USAGE));
    }
    Out { json }.finish(Err(clap_to_error(e)))
}

/// Splits clap's rendering into the error (its first line) and a hint (a
/// `tip:` line and the usage line).
fn clap_to_error(e: &clap::Error) -> CliError {
    let text = e.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("usage error");
    let error = first.strip_prefix("error: ").unwrap_or(first).to_owned();
    let rest: Vec<&str> = lines
        .filter(|l| l.starts_with("tip:") || l.starts_with("Usage:"))
        .collect();
    let hint = if rest.is_empty() {
        "`tandem COMMAND --help` shows what the command takes".to_owned()
    } else {
        format!("{}; see --help", rest.join("; "))
    };
    CliError {
        code: USAGE,
        error,
        hint: Some(hint),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Parser, Debug)]
    struct T {
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        cmd: Sub,
    }

    #[derive(clap::Subcommand, Debug)]
    enum Sub {
        Show { ip: std::net::Ipv4Addr },
    }

    #[test]
    fn a_failure_in_json_has_error_and_hint_keys_even_when_hint_is_null() {
        let v = serde_json::to_value(ErrorOut {
            error: "404: no lease for 10.0.0.9".into(),
            hint: None,
        })
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": "404: no lease for 10.0.0.9", "hint": null})
        );
        let back: ErrorOut = serde_json::from_str(r#"{"error": "x", "hint": "do y"}"#).unwrap();
        assert_eq!(back.hint.as_deref(), Some("do y"));
    }

    #[test]
    fn client_errors_map_onto_the_exit_codes_and_keep_the_servers_hint() {
        let e = CliError::from(ClientError::Unreachable {
            url: "https://10.0.0.1:7481/v1/status".into(),
            message: "connection refused".into(),
        });
        assert_eq!(e.code, 3);
        assert!(e.hint.is_some());
        assert_eq!(CliError::from(ClientError::NoLeader("x".into())).code, 3);
        let e = CliError::from(ClientError::Failed {
            status: 422,
            message: "field `ip`: 10.1.0.1 is in no subnet".into(),
            hint: Some("pick an address inside 10.0.0.0/24".into()),
        });
        assert_eq!(
            (e.code, e.hint.as_deref()),
            (1, Some("pick an address inside 10.0.0.0/24"))
        );
        assert_eq!(e.error, "422: field `ip`: 10.1.0.1 is in no subnet");
        let e = CliError::from(ClientError::Failed {
            status: 401,
            message: "wrong admin token".into(),
            hint: None,
        });
        assert!(e.hint.is_some_and(|h| h.contains("TANDEM_TOKEN")));
    }

    #[test]
    fn a_clap_usage_error_becomes_error_and_hint() {
        let e = T::try_parse_from(["t", "--json", "show", "10.0.0.300"]).unwrap_err();
        let c = clap_to_error(&e);
        assert_eq!(c.code, 2);
        assert!(c.error.starts_with("invalid value '10.0.0.300'"), "{c:?}");
        assert!(c.hint.is_some(), "{c:?}");
        let e = T::try_parse_from(["t", "shw"]).unwrap_err();
        let c = clap_to_error(&e);
        assert!(c.error.contains("'shw'"), "{c:?}");
        assert!(c.hint.is_some_and(|h| h.contains("tip:")));
        T::command().debug_assert();
    }

    #[test]
    fn json_is_wanted_only_before_a_double_dash() {
        let a = |v: &[&str]| -> Vec<std::ffi::OsString> { v.iter().map(Into::into).collect() };
        assert!(wants_json(&a(&["tandem", "lease", "show", "--json", "x"])));
        assert!(!wants_json(&a(&["tandem", "lease", "show", "x"])));
        assert!(!wants_json(&a(&["tandem", "apply", "--", "--json"])));
    }
}
