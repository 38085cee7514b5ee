//! `tandem completions SHELL` and `tandem man`: generated from the clap
//! definition itself (`clap_complete`, `clap_mangen`), so they never drift from
//! the flags.

use serde::Serialize;

use super::output::{CliError, Done, Out};

#[derive(Serialize)]
struct ScriptOut {
    shell: String,
    script: String,
}

#[derive(Serialize)]
struct PageOut {
    format: &'static str,
    page: String,
}

/// Prints the completion script for `shell` (`--json`: `{"shell", "script"}`).
pub fn completions(out: Out, shell: clap_complete::Shell, mut cmd: clap::Command) {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "tandem", &mut buf);
    let script = String::from_utf8_lossy(&buf).into_owned();
    out.show(
        &ScriptOut {
            shell: shell.to_string(),
            script,
        },
        |s| write_out(&s.script),
    );
}

/// Prints the manual page `tandem(1)`: synopsis, global options and the
/// subcommands (`--json`: `{"format": "roff", "page"}`).
pub fn man(out: Out, cmd: clap::Command) -> Done {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut buf)
        .map_err(|e| CliError::failed(format!("cannot render the manual page: {e}"), None))?;
    out.show(
        &PageOut {
            format: "roff",
            page: String::from_utf8_lossy(&buf).into_owned(),
        },
        |p| write_out(&p.page),
    );
    Ok(())
}

/// Writes `text` to stdout; a reader that stops early (`| head`) is fine.
fn write_out(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
