//! The `tandem` binary's CLI where no cluster is needed: completion scripts
//! that bash really sources and completes from, a manual page that groff
//! (or man) really renders, usage errors (exit 2) and unreachable nodes
//! (exit 3) as JSON. The cluster side is `tests/cluster/cli.rs`.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn tandem(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(args)
        // No node config here: nothing is read from /etc/tandem.
        .args(["--config", "/nonexistent/node.toml"])
        .env_remove("TANDEM_API")
        .env_remove("TANDEM_NODES")
        .env_remove("TANDEM_TOKEN")
        .output()
        .expect("running tandem")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The words bash completes for `line` (ending in the word being typed),
/// after sourcing `tandem completions bash`.
fn bash_complete(script: &std::path::Path, line: &str) -> Vec<String> {
    let words: Vec<&str> = line.split(' ').collect();
    let cmd = format!(
        "source {}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; COMP_WORDS=({}); COMP_CWORD={}; \
         _tandem tandem '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        words
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" "),
        words.len() - 1,
        words[words.len() - 1],
        words[words.len() - 2],
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &cmd])
        .output()
        .expect("running bash");
    assert!(
        out.status.success(),
        "bash: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout).lines().map(str::to_owned).collect()
}

#[test]
fn bash_sources_the_completion_script_and_completes_subcommands() {
    let out = tandem(&["completions", "bash"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = std::env::temp_dir().join(format!("tandem-completions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("tandem.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let top = bash_complete(&script, "tandem res");
    assert_eq!(top, ["reservation"], "completing `tandem res`");
    let lease = bash_complete(&script, "tandem lease ");
    for w in ["list", "show", "release"] {
        assert!(
            lease.iter().any(|x| x == w),
            "`tandem lease ` offers {lease:?}"
        );
    }
    let flags = bash_complete(&script, "tandem reservation add --host");
    assert_eq!(flags, ["--hostname"]);
    for shell in ["zsh", "fish"] {
        let out = tandem(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("reservation"), "{shell} script");
    }
    // An unknown shell is a usage error.
    assert_eq!(tandem(&["completions", "tcsh"]).status.code(), Some(2));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_manual_page_renders() {
    let out = tandem(&["man"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let roff = text(&out.stdout);
    assert!(
        roff.starts_with(".ie") || roff.contains(".TH tandem"),
        "{roff}"
    );
    // groff (or man) renders it: the sections a reader looks for are there.
    let (prog, args): (&str, &[&str]) = if which("groff") {
        ("groff", &["-man", "-Tutf8", "-ww"])
    } else if which("man") {
        ("man", &["-P", "cat", "-l", "-"])
    } else {
        eprintln!("neither groff nor man: checked the roff only");
        return;
    };
    let mut child = Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting the renderer");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), roff.as_bytes()).unwrap();
    let r = child.wait_with_output().unwrap();
    // grotty emboldens by overstriking ("N\bN"): keep the last of each pair.
    let mut page = String::new();
    for c in text(&r.stdout).chars() {
        if c == '\u{8}' {
            page.pop();
        } else {
            page.push(c);
        }
    }
    assert!(r.status.success(), "{prog}: {}", text(&r.stderr));
    assert!(
        text(&r.stderr).trim().is_empty(),
        "{prog} warned: {}",
        text(&r.stderr)
    );
    for want in ["NAME", "SYNOPSIS", "reservation", "--nodes", "Exit codes"] {
        assert!(page.contains(want), "rendered page lacks {want:?}:\n{page}");
    }
}

fn which(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn usage_errors_exit_2_and_are_json_with_json() {
    for args in [
        &["--json", "lease", "show", "not-a-mac"][..],
        &["--json", "frobnicate"],
        &["reservation", "add", "52:54:00:00:00:01", "--json"],
        &["--json", "--timeout", "soon", "status"],
    ] {
        let out = tandem(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", text(&out.stdout)));
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        assert!(v["hint"].as_str().is_some(), "{v}");
        assert_eq!(v.as_object().map(serde_json::Map::len), Some(2), "{v}");
    }
    // Without --json the error is text on stderr, and stdout stays empty.
    let out = tandem(&["lease", "show", "not-a-mac"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty() && text(&out.stderr).contains("not-a-mac"));
    // --help is no error.
    assert_eq!(tandem(&["--help"]).status.code(), Some(0));
}

#[test]
fn a_dead_node_is_exit_3_at_once_and_timeout_bounds_the_retries() {
    // Nothing listens on 127.0.0.1:9: refused at once.
    let t = Instant::now();
    let out = tandem(&["--json", "--api", "127.0.0.1:9", "status"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["error"].as_str().unwrap().contains("127.0.0.1:9"), "{v}");
    let t = Instant::now();
    let out = tandem(&[
        "--nodes",
        "127.0.0.1:9,127.0.0.1:19",
        "--timeout",
        "1500ms",
        "--backoff-cap",
        "200ms",
        "lease",
        "release",
        "10.0.0.5",
    ]);
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(4),
        "--timeout 1500ms took {took:?}"
    );
    assert!(
        text(&out.stderr).contains("gave up after"),
        "{}",
        text(&out.stderr)
    );
}
