//! Drawing one frame: a pure function of a [`Snapshot`] and the [`View`]
//! (focus, scroll, help), so unit tests render into ratatui's `TestBackend`.
//!
//! ```text
//!   header: clock (UTC), leader and term, members up, keys
//!   Nodes       id address role term log applied lag hb up serve vip
//!   Leases | Traffic | XDP
//!   Events (newest at the bottom) | Artifacts
//! ```
//! Laid out for 80x24 and wider. Only ASCII inside the panes (bars are `#`
//! and `.`), box-drawing borders when the locale is UTF-8 and `+-|` when it
//! is not, 8 colours: it reads the same on the Linux console.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::border;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Table};
use ratatui::Frame;

use super::snapshot::{NodeRow, Snapshot};

/// The panes, in tab order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pane {
    Nodes,
    Leases,
    Traffic,
    Xdp,
    Events,
    Artifacts,
}

impl Pane {
    pub const ALL: [Pane; 6] = [
        Pane::Nodes,
        Pane::Leases,
        Pane::Traffic,
        Pane::Xdp,
        Pane::Events,
        Pane::Artifacts,
    ];

    fn title(self) -> &'static str {
        match self {
            Pane::Nodes => "Nodes",
            Pane::Leases => "Leases",
            Pane::Traffic => "Traffic",
            Pane::Xdp => "XDP",
            Pane::Events => "Events",
            Pane::Artifacts => "Artifacts",
        }
    }

    fn index(self) -> usize {
        Pane::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }
}

/// What the operator chose: the focused pane, each pane's scroll, help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub focus: Pane,
    /// Lines scrolled, per pane (Events: up from the newest).
    pub scroll: [usize; 6],
    pub help: bool,
    /// `+-|` borders instead of box drawing.
    pub ascii: bool,
}

impl View {
    #[must_use]
    pub fn new(ascii: bool) -> View {
        View {
            focus: Pane::Nodes,
            scroll: [0; 6],
            help: false,
            ascii,
        }
    }

    /// Tab (or back-tab, `forward = false`).
    pub fn next_pane(&mut self, forward: bool) {
        let n = Pane::ALL.len();
        let i = self.focus.index();
        self.focus = Pane::ALL[if forward {
            (i + 1) % n
        } else {
            (i + n - 1) % n
        }];
    }

    /// Scrolls the focused pane by `delta` lines (positive: towards older
    /// events, later rows).
    pub fn scroll_by(&mut self, delta: isize) {
        let s = &mut self.scroll[self.focus.index()];
        *s = s.saturating_add_signed(delta);
    }
}

const ASCII_BORDER: border::Set<'static> = border::Set {
    top_left: "+",
    top_right: "+",
    bottom_left: "+",
    bottom_right: "+",
    vertical_left: "|",
    vertical_right: "|",
    horizontal_top: "-",
    horizontal_bottom: "-",
};

/// A bordered block titled `title`, with the borders the terminal can show.
fn titled(view: &View, title: String, style: Style) -> Block<'static> {
    let b = Block::bordered()
        .title(Span::styled(
            title,
            Style::new().add_modifier(Modifier::BOLD),
        ))
        .border_style(style);
    if view.ascii {
        b.border_set(ASCII_BORDER)
    } else {
        b.border_set(border::PLAIN)
    }
}

/// A pane's block; the focused one is titled `[Name]` (visible without
/// colour) and drawn in yellow.
fn block(view: &View, pane: Pane) -> Block<'static> {
    if view.focus == pane {
        titled(
            view,
            format!("[{}]", pane.title()),
            Style::new().fg(Color::Yellow),
        )
    } else {
        titled(view, format!(" {} ", pane.title()), Style::new())
    }
}

/// `HH:MM:SS` (UTC) of unix milliseconds.
#[must_use]
pub fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// 1234 → "1234", 12345 → "12.3k", 1234567 → "1.2M".
#[allow(
    clippy::cast_precision_loss,
    reason = "a display rounding to three digits"
)]
#[must_use]
pub fn compact(n: u64) -> String {
    match n {
        0..10_000 => n.to_string(),
        10_000..10_000_000 => format!("{:.1}k", n as f64 / 1e3),
        10_000_000..10_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}G", n as f64 / 1e9),
    }
}

/// Bytes as B, KiB, MiB or GiB with one decimal.
#[allow(
    clippy::cast_precision_loss,
    reason = "a display rounding to one decimal"
)]
#[must_use]
pub fn bytes(n: f64) -> String {
    if n < 1024.0 {
        format!("{n:.0} B")
    } else if n < 1024.0 * 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else if n < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / (1024.0 * 1024.0))
    } else {
        format!("{:.1} GiB", n / (1024.0 * 1024.0 * 1024.0))
    }
}

/// `[####......]` of `width` cells (brackets included) for `used` of `total`.
#[must_use]
pub fn bar(used: u64, total: u64, width: usize) -> String {
    let inner = width.saturating_sub(2);
    let full = if total == 0 {
        0
    } else {
        usize::try_from(u128::from(used.min(total)) * inner as u128 / u128::from(total))
            .unwrap_or(inner)
    };
    // Any use shows at least one mark.
    let full = if used > 0 && total > 0 && full == 0 {
        1.min(inner)
    } else {
        full
    };
    format!("[{}{}]", "#".repeat(full), ".".repeat(inner - full))
}

fn percent(used: u64, total: u64) -> u64 {
    if total == 0 {
        0
    } else {
        u64::try_from(u128::from(used) * 100 / u128::from(total)).unwrap_or(100)
    }
}

/// Draws the whole screen.
pub fn draw(f: &mut Frame, snap: &Snapshot, view: &View) {
    let area = f.area();
    let node_rows = u16::try_from(snap.nodes.len().max(1)).unwrap_or(u16::MAX);
    let [head, nodes, middle, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(node_rows.saturating_add(3).min(10)),
        Constraint::Length(8),
        Constraint::Min(4),
    ])
    .areas(area);
    draw_header(f, head, snap);
    draw_nodes(f, nodes, snap, view);
    // 26 + 25 + 29 at 80 columns: the XDP table needs 27 inside.
    let [leases, traffic, xdp] = Layout::horizontal([
        Constraint::Fill(26),
        Constraint::Fill(25),
        Constraint::Fill(29),
    ])
    .areas(middle);
    draw_leases(f, leases, snap, view);
    draw_traffic(f, traffic, snap, view);
    draw_xdp(f, xdp, snap, view);
    let [events, artifacts] =
        Layout::horizontal([Constraint::Percentage(68), Constraint::Percentage(32)]).areas(bottom);
    draw_events(f, events, snap, view);
    draw_artifacts(f, artifacts, snap, view);
    if view.help {
        draw_help(f, area, view);
    }
}

fn draw_header(f: &mut Frame, area: Rect, snap: &Snapshot) {
    let up = snap.nodes.iter().filter(|n| n.reachable).count();
    let mut spans = vec![
        Span::styled("tandem top ", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!("{}Z  ", clock(snap.now_ms))),
    ];
    match snap.leader {
        Some((id, term)) => spans.push(Span::styled(
            format!("leader node {id} term {term}"),
            Style::new().fg(Color::Green),
        )),
        None => spans.push(Span::styled(
            "NO LEADER reachable",
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        )),
    }
    let up_style = if up == snap.nodes.len() {
        Style::new()
    } else {
        Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
    };
    spans.push(Span::styled(
        format!("  {up}/{} up", snap.nodes.len()),
        up_style,
    ));
    spans.push(Span::raw("  tab ? q"));
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn heartbeat(ms: Option<u64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 10_000 => format!("{ms}ms"),
        Some(ms) => format!("{}s", ms / 1000),
    }
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    }
}

fn node_row(n: &NodeRow) -> Row<'static> {
    let down = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
    let role_style = match n.role.as_deref() {
        Some("leader") => Style::new().fg(Color::Green).add_modifier(Modifier::BOLD),
        Some("candidate" | "shutdown") => Style::new().fg(Color::Yellow),
        None => down,
        _ => Style::new(),
    };
    Row::new(vec![
        Cell::from(opt(n.id)),
        Cell::from(n.addr.clone()),
        Cell::from(Span::styled(
            n.role.clone().unwrap_or_else(|| "-".into()),
            role_style,
        )),
        Cell::from(opt(n.term)),
        Cell::from(opt(n.last_log)),
        Cell::from(opt(n.applied)),
        Cell::from(opt(n.lag)),
        Cell::from(heartbeat(n.heartbeat_ms)),
        if n.reachable {
            Cell::from("yes")
        } else {
            Cell::from(Span::styled("NO", down))
        },
        Cell::from(yes_no(n.serving)),
        Cell::from(yes_no(n.vip_held)),
    ])
}

fn draw_nodes(f: &mut Frame, area: Rect, snap: &Snapshot, view: &View) {
    let skip = view.scroll[Pane::Nodes.index()].min(snap.nodes.len().saturating_sub(1));
    let rows: Vec<Row> = snap.nodes.iter().skip(skip).map(node_row).collect();
    let widths = [
        Constraint::Length(3),
        Constraint::Length(15),
        Constraint::Length(9),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(4),
        Constraint::Length(6),
        Constraint::Length(4),
        Constraint::Length(5),
        Constraint::Length(3),
    ];
    let header = Row::new([
        "ID", "ADDRESS", "ROLE", "TERM", "LOG", "APPLIED", "LAG", "HB", "UP", "SERVE", "VIP",
    ])
    .style(Style::new().add_modifier(Modifier::BOLD));
    let mut b = block(view, Pane::Nodes);
    // Why a node is unreachable (or what it refused), on the bottom border.
    let problems: Vec<String> = snap
        .nodes
        .iter()
        .filter_map(|n| {
            n.problem.as_ref().map(|p| {
                format!(
                    "{}: {p}",
                    n.id.map_or_else(|| n.addr.clone(), |i| format!("node {i}"))
                )
            })
        })
        .collect();
    if !problems.is_empty() {
        b = b.title_bottom(Span::styled(
            format!(" {} ", problems.join("; ")),
            Style::new().fg(Color::Red),
        ));
    }
    table_or(
        f,
        area,
        b,
        snap.nodes
            .is_empty()
            .then_some("no members known yet: asking the node (or give --nodes a,b,c)"),
        Table::new(rows, widths).header(header),
    );
}

fn draw_leases(f: &mut Frame, area: Rect, snap: &Snapshot, view: &View) {
    let inner_w = usize::from(area.width.saturating_sub(2));
    let mut lines: Vec<Line> = Vec::new();
    for s in &snap.subnets {
        let total = s.used + s.free;
        let count = format!("{}/{}", s.used, total);
        let pad = inner_w.saturating_sub(s.subnet.len() + count.len()).max(1);
        lines.push(Line::from(format!(
            "{}{}{count}",
            s.subnet,
            " ".repeat(pad)
        )));
        let pct = format!(" {:>3}%", percent(s.used, total));
        let style = if percent(s.used, total) >= 90 {
            Style::new().fg(Color::Red)
        } else {
            Style::new().fg(Color::Green)
        };
        lines.push(Line::from(vec![
            Span::styled(bar(s.used, total, inner_w.saturating_sub(pct.len())), style),
            Span::raw(pct),
        ]));
    }
    if lines.is_empty() {
        lines.push(Line::from(if snap.nodes.iter().any(|n| n.reachable) {
            "no subnets (tandem apply)"
        } else {
            "no node answers"
        }));
    }
    let skip = view.scroll[Pane::Leases.index()].min(lines.len().saturating_sub(1));
    let lines: Vec<Line> = lines.into_iter().skip(skip).collect();
    f.render_widget(Paragraph::new(lines).block(block(view, Pane::Leases)), area);
}

fn draw_traffic(f: &mut Frame, area: Rect, snap: &Snapshot, view: &View) {
    let inner_w = usize::from(area.width.saturating_sub(2));
    let line = |label: &str, value: String| {
        let pad = inner_w.saturating_sub(label.len() + value.len()).max(1);
        Line::from(format!("{label}{}{value}", " ".repeat(pad)))
    };
    let rate = |f: fn(&super::snapshot::Rates) -> f64| {
        snap.rates
            .as_ref()
            .map_or_else(|| "-".into(), |r| format!("{:.1}/s", f(r)))
    };
    let lines = vec![
        line("DHCP in", rate(|r| r.dhcp_in)),
        line("DHCP out", rate(|r| r.dhcp_out)),
        line("TFTP xfers", rate(|r| r.tftp_transfers)),
        line(
            "TFTP data",
            snap.rates
                .as_ref()
                .map_or_else(|| "-".into(), |r| format!("{}/s", bytes(r.tftp_bytes))),
        ),
        line("TFTP active", snap.tftp_active.to_string()),
        line("HTTP reqs", rate(|r| r.http_requests)),
    ];
    let skip = view.scroll[Pane::Traffic.index()].min(lines.len().saturating_sub(1));
    let lines: Vec<Line> = lines.into_iter().skip(skip).collect();
    f.render_widget(
        Paragraph::new(lines).block(block(view, Pane::Traffic)),
        area,
    );
}

fn draw_xdp(f: &mut Frame, area: Rect, snap: &Snapshot, view: &View) {
    let skip = view.scroll[Pane::Xdp.index()].min(snap.xdp.len().saturating_sub(1));
    let rows: Vec<Row> = snap
        .xdp
        .iter()
        .skip(skip)
        .map(|x| {
            let drops = Style::new().fg(if x.ratelimited > 0 {
                Color::Yellow
            } else {
                Color::Reset
            });
            let proto = if x.proto == "arp_conflict" {
                "arp_conf".to_owned()
            } else {
                x.proto.clone()
            };
            Row::new(vec![
                Cell::from(proto),
                Cell::from(compact(x.pass)),
                Cell::from(compact(x.drop)),
                Cell::from(Span::styled(compact(x.ratelimited), drops)),
            ])
        })
        .collect();
    let header = Row::new(["proto", "pass", "drop", "rlim"])
        .style(Style::new().add_modifier(Modifier::BOLD));
    let widths = [
        Constraint::Length(8),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(5),
    ];
    let b = block(view, Pane::Xdp);
    table_or(
        f,
        area,
        b,
        snap.xdp.is_empty().then_some("no XDP counters"),
        Table::new(rows, widths).header(header),
    );
}

/// `table` in `block`, or `empty` (a one-line note) when there is nothing to list.
fn table_or(f: &mut Frame, area: Rect, block: Block, empty: Option<&str>, table: Table) {
    match empty {
        Some(note) => f.render_widget(Paragraph::new(note).block(block), area),
        None => f.render_widget(table.column_spacing(1).block(block), area),
    }
}

fn event_tag(kind: &str) -> (&'static str, Style) {
    let warn = Style::new().fg(Color::Yellow);
    let bad = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
    match kind {
        "election" => ("elect", Style::new().fg(Color::Cyan)),
        "transition" => ("trans", Style::new().fg(Color::Green)),
        "vip-conflict" => ("VIP! ", bad),
        "peer-lost" => ("lost ", warn),
        "peer-found" => ("found", Style::new().fg(Color::Green)),
        "storage" => ("DISK!", bad),
        _ => ("event", Style::new()),
    }
}

fn draw_events(f: &mut Frame, area: Rect, snap: &Snapshot, view: &View) {
    let height = usize::from(area.height.saturating_sub(2));
    let n = snap.events.len();
    // Scrolled up from the newest; never past the oldest screenful.
    let up = view.scroll[Pane::Events.index()].min(n.saturating_sub(height));
    let end = n - up;
    let start = end.saturating_sub(height);
    let lines: Vec<Line> = snap.events[start..end]
        .iter()
        .map(|e| {
            let (tag, style) = event_tag(&e.kind);
            Line::from(vec![
                Span::raw(format!("{} n{} ", clock(e.at_ms), e.node)),
                Span::styled(tag, style),
                Span::raw(format!(" {}", e.message)),
            ])
        })
        .collect();
    let mut b = block(view, Pane::Events);
    if up > 0 {
        b = b.title_bottom(format!(" {up} newer below (End) "));
    }
    if lines.is_empty() {
        f.render_widget(Paragraph::new("no events yet").block(b), area);
        return;
    }
    f.render_widget(Paragraph::new(lines).block(b), area);
}

fn draw_artifacts(f: &mut Frame, area: Rect, snap: &Snapshot, view: &View) {
    let ids: Vec<u64> = snap.nodes.iter().filter_map(|n| n.id).collect();
    let skip = view.scroll[Pane::Artifacts.index()].min(snap.artifacts.len().saturating_sub(1));
    let rows: Vec<Row> = snap
        .artifacts
        .iter()
        .skip(skip)
        .map(|a| {
            // One column per node, its id if it holds the artifact, else '.'.
            let held: String = ids
                .iter()
                .map(|i| {
                    if a.holders.contains(i) {
                        (i % 10).to_string()
                    } else {
                        ".".into()
                    }
                })
                .collect();
            let style = if ids.iter().all(|i| a.holders.contains(i)) {
                Style::new()
            } else {
                Style::new().fg(Color::Yellow)
            };
            Row::new(vec![
                Cell::from(a.name.clone()),
                Cell::from(compact(a.size)),
                Cell::from(Span::styled(held, style)),
            ])
        })
        .collect();
    let holders_w = u16::try_from(ids.len().max(3)).unwrap_or(3);
    let widths = [
        Constraint::Min(6),
        Constraint::Length(5),
        Constraint::Length(holders_w),
    ];
    let header = Row::new(["name", "size", "on"]).style(Style::new().add_modifier(Modifier::BOLD));
    let b = block(view, Pane::Artifacts);
    table_or(
        f,
        area,
        b,
        snap.artifacts.is_empty().then_some("none"),
        Table::new(rows, widths).header(header),
    );
}

const HELP: &[&str] = &[
    "q, Ctrl-C     quit",
    "tab/S-tab     next/previous pane",
    "up/down/PgUp  scroll the pane in [brackets]",
    "Home/End      top / newest events",
    "?, Esc        this help on/off",
    "",
    "Every member is asked each second (0.8 s limit);",
    "UP=NO: its API did not answer (reason below the",
    "nodes). LAG and HB (since its last heartbeat ack)",
    "come from the leader. Events: election, transition",
    "(with duration), VIP! conflict, peer lost/found,",
    "DISK! storage error; nN = the node that saw it.",
];

fn draw_help(f: &mut Frame, area: Rect, view: &View) {
    let width = 56.min(area.width);
    let height = u16::try_from(HELP.len() + 2)
        .unwrap_or(u16::MAX)
        .min(area.height);
    let at = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    f.render_widget(Clear, at);
    let b = titled(view, " Help ".into(), Style::new().fg(Color::Cyan));
    let lines: Vec<Line> = HELP.iter().map(|l| Line::from(*l)).collect();
    f.render_widget(Paragraph::new(lines).block(b), at);
}
