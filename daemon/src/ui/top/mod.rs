//! # Layout
//! `tandem top`: the console view of the whole cluster, refreshed every
//! second, from any node, that keeps working while its own node or the
//! leader is down: it asks every member itself, each in its own thread with
//! short timeouts, and draws whatever answered.
//!
//! ```text
//!   poll (a thread per member) ──▶ NodeView ──┐
//!                      events ──▶ EventLog ───┴─▶ Snapshot::build ──▶ render::draw
//!   keys (q, tab, ?, scroll) ──▶ View ─────────────────────────────────────┘
//! ```
//!
//! - `prom`: the Prometheus text lines it reads from `/metrics`.
//! - `snapshot`: [`Snapshot`], the frame as plain values, built purely from
//!   the pollers' views; rates; the merged event list.
//! - `poll`: the pollers and member discovery (the seeds, then the members
//!   the nodes report; `--nodes` fixes the list).
//! - `render`: [`render::draw`], a pure function of a `Snapshot` and the
//!   [`render::View`], testable on ratatui's `TestBackend`.
//! - this file: the terminal, the refresh loop and the keys.

pub mod poll;
pub mod prom;
pub mod render;
pub mod snapshot;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

pub use render::{Pane, View};
pub use snapshot::Snapshot;

use crate::api::client::Access;

/// How often the screen takes the pollers' latest views.
pub const REFRESH: Duration = Duration::from_secs(1);
/// The first frame with data: the pollers' first answers, usually.
const FIRST_REFRESH: Duration = Duration::from_millis(300);

/// What a key does.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyAction {
    Quit,
    Redraw,
    Nothing,
}

/// Applies one key press to `view`.
pub fn on_key(view: &mut View, k: KeyEvent) -> KeyAction {
    if k.kind != KeyEventKind::Press {
        return KeyAction::Nothing;
    }
    // Up scrolls the events towards older ones (they grow at the bottom)
    // and the other panes towards their first rows.
    let up: isize = if view.focus == Pane::Events { 1 } else { -1 };
    match k.code {
        KeyCode::Char('q' | 'Q') => return KeyAction::Quit,
        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
            return KeyAction::Quit
        }
        KeyCode::Char('?') => view.help = !view.help,
        KeyCode::Esc => view.help = false,
        KeyCode::Tab => view.next_pane(true),
        KeyCode::BackTab => view.next_pane(false),
        KeyCode::Up | KeyCode::Char('k') => view.scroll_by(up),
        KeyCode::Down | KeyCode::Char('j') => view.scroll_by(-up),
        KeyCode::PageUp => view.scroll_by(5 * up),
        KeyCode::PageDown => view.scroll_by(-5 * up),
        KeyCode::Home => view.scroll_by(isize::MAX * up.signum()),
        KeyCode::End => view.scroll_by(-isize::MAX * up.signum()),
        _ => return KeyAction::Nothing,
    }
    KeyAction::Redraw
}

/// Whether the locale's charset is UTF-8 (else the borders are ASCII).
fn utf8_locale() -> bool {
    ["LC_ALL", "LC_CTYPE", "LANG"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .is_some_and(|v| {
            let v = v.to_ascii_lowercase();
            v.contains("utf-8") || v.contains("utf8")
        })
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Runs the console until `q`. `api`: the local node's API (the first
/// member asked); `nodes`: a fixed member list instead (`--nodes`).
#[must_use]
pub fn run(api: &str, nodes: &[String], access: Access) -> ExitCode {
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        eprintln!("tandem: top draws on a terminal; for scripts use `tandem status --json`");
        return ExitCode::from(2);
    }
    let seeds: Vec<String> = if nodes.is_empty() {
        vec![api.to_owned()]
    } else {
        nodes.to_vec()
    };
    let mut pollers = poll::Pollers::new(&seeds, !nodes.is_empty(), access);
    let mut terminal = match ratatui::try_init() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tandem: cannot set up the terminal: {e}");
            return ExitCode::from(1);
        }
    };
    let r = event_loop(&mut terminal, &mut pollers);
    ratatui::restore();
    let code = match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("tandem: top: {e}");
            1
        }
    };
    quit_now(code)
}

/// Ends the process at once. The pollers may sit in a call to a dead or
/// cut-off member (up to their timeout), and an ordinary exit, which runs
/// the process's exit handlers while they hold what those handlers take,
/// was seen to hang after `q` (a blank, restored screen and a live process,
/// in 2 of about 12 lab runs, always with members unreachable).
fn quit_now(code: i32) -> ! {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit(2) ends the process without running exit handlers; the
    // terminal is restored and stdout/stderr are flushed above, and nothing
    // else of this process needs to outlive it.
    unsafe { libc::_exit(code) }
}

fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    pollers: &mut poll::Pollers,
) -> std::io::Result<()> {
    let mut view = View::new(!utf8_locale());
    let mut snap = Snapshot::default();
    let mut next = Instant::now() + FIRST_REFRESH;
    loop {
        let now = Instant::now();
        if now >= next {
            let (views, log) = pollers.take();
            snap = Snapshot::build(&views, &log.rows(), unix_ms());
            next = (next + REFRESH).max(now + REFRESH / 2);
        }
        terminal.draw(|f| render::draw(f, &snap, &view))?;
        // Wait for a key until the next refresh; draw again after either.
        let mut wait = next.saturating_duration_since(Instant::now());
        while event::poll(wait)? {
            match event::read()? {
                Event::Key(k) => match on_key(&mut view, k) {
                    KeyAction::Quit => return Ok(()),
                    KeyAction::Redraw => break,
                    KeyAction::Nothing => {}
                },
                Event::Resize(..) => break,
                _ => {}
            }
            wait = next.saturating_duration_since(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests;
