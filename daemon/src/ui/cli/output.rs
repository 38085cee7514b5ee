//! What the CLI prints and how it exits (DESIGN.md section 4).

use std::process::ExitCode;

use crate::api::client::ClientError;

/// Prints `e` and maps it onto the exit codes: 3 when no node or no leader
/// answered, 1 for any other failure.
pub fn fail(e: &ClientError) -> ExitCode {
    eprintln!("tandem: {e}");
    match e {
        ClientError::Unreachable { .. } | ClientError::NoLeader(_) => ExitCode::from(3),
        _ => ExitCode::from(1),
    }
}

pub fn print_json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    );
}
