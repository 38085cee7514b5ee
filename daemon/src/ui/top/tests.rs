//! `tandem top` without a terminal: snapshots built from hand-made views,
//! rendered into ratatui's `TestBackend` at 80x24, read back as text.

use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;

use super::prom;
use super::snapshot::{Counters, EventLog, NodeView, Rates, Snapshot};
use super::{on_key, KeyAction, Pane, View};
use crate::api::dto::{ArtifactDto, EventDto, MemberDto, StatusDto};

const T0: u64 = 1_764_650_000_000; // 2025-12-02 04:33:20 UTC

fn member(id: u64, role: &str, lag: Option<u64>, silence: Option<u64>) -> MemberDto {
    MemberDto {
        id,
        raft: format!("10.99.0.{}:7480", 10 + id),
        api: format!("10.99.0.{}:7481", 10 + id),
        role: role.into(),
        lag_entries: lag,
        silence_ms: silence,
    }
}

fn status(id: u64, role: &str, leader: u64, term: u64) -> StatusDto {
    let is_leader = role == "leader";
    StatusDto {
        node_id: id,
        role: role.into(),
        term,
        leader: Some(leader),
        last_log_index: Some(40 + id),
        applied_index: Some(40),
        members: (1..=3)
            .map(|m| {
                let r = if m == leader { "leader" } else { "follower" };
                if is_leader && m != id {
                    member(m, r, Some(m), Some(10 * m))
                } else {
                    member(m, r, None, None)
                }
            })
            .collect(),
        vip_held: is_leader,
        vip: "10.99.0.10/16".into(),
        serving: is_leader,
        warnings: vec![],
    }
}

const METRICS: &str = "\
tandem_dhcp_leases{subnet=\"10.99.0.0/16\",state=\"bound\"} 150\n\
tandem_dhcp_leases{subnet=\"10.99.0.0/16\",state=\"declined\"} 30\n\
tandem_dhcp_leases{subnet=\"10.99.0.0/16\",state=\"free\"} 20\n\
tandem_dhcp_leases{subnet=\"10.98.0.0/24\",state=\"bound\"} 0\n\
tandem_dhcp_leases{subnet=\"10.98.0.0/24\",state=\"free\"} 100\n\
tandem_tftp_active 2\n\
tandem_xdp_packets_total{proto=\"dhcp\",verdict=\"pass\"} 1000\n\
tandem_xdp_packets_total{proto=\"dhcp\",verdict=\"drop\"} 7\n\
tandem_xdp_packets_total{proto=\"dhcp\",verdict=\"ratelimited\"} 3\n";

fn view(id: u64, role: &str, leader: u64) -> NodeView {
    NodeView {
        api: format!("https://10.99.0.{}:7481", 10 + id),
        status: Some(status(id, role, leader, 5)),
        error: None,
        note: None,
        rates: Some(Rates {
            dhcp_in: 10.0,
            dhcp_out: 9.0,
            tftp_transfers: 0.5,
            tftp_bytes: 3.0 * 1024.0 * 1024.0,
            http_requests: 2.0,
        }),
        metrics: prom::parse(METRICS),
        artifacts: Some(vec![ArtifactDto {
            name: "vmlinuz".into(),
            sha256: "ab".repeat(32),
            size: 12_000_000,
            added_at: 0,
            holders: vec![2, 3],
        }]),
    }
}

fn dead(id: u64, why: &str) -> NodeView {
    NodeView {
        api: format!("https://10.99.0.{}:7481", 10 + id),
        // What it said before it died is not shown as current.
        status: Some(status(id, "leader", id, 4)),
        error: Some(why.into()),
        ..NodeView::default()
    }
}

fn events() -> EventLog {
    let mut log = EventLog::default();
    let ev = |seq, dt, kind: &str, msg: &str| EventDto {
        seq,
        at_ms: T0 + dt,
        kind: kind.into(),
        message: msg.into(),
    };
    log.add(
        3,
        1,
        &[
            ev(1, 200, "election", "leader is node 2 (term 5, index 41)"),
            ev(
                2,
                900,
                "peer-lost",
                "peer 1 is not answering heartbeats (lag 0)",
            ),
        ],
    );
    log.add(
        2,
        1,
        &[
            ev(7, 100, "election", "leader is node 2 (term 5, index 41)"),
            ev(
                8,
                400,
                "transition",
                "serving, up in 35.2 ms (term 5, index 41)",
            ),
        ],
    );
    // The same events again (a poller re-read after a restart): no duplicates.
    log.add(
        2,
        1,
        &[ev(
            8,
            400,
            "transition",
            "serving, up in 35.2 ms (term 5, index 41)",
        )],
    );
    log
}

fn screen(snap: &Snapshot, view: &View) -> Vec<String> {
    let mut t = Terminal::new(TestBackend::new(80, 24)).expect("test terminal");
    t.draw(|f| super::render::draw(f, snap, view))
        .expect("draw");
    let buf = t.backend().buffer().clone();
    (0..buf.area.height)
        .map(|y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol().to_owned())
                .collect::<String>()
        })
        .collect()
}

fn find<'a>(lines: &'a [String], what: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no line with {what:?} on screen:\n{}", lines.join("\n")))
}

fn cluster_of_three() -> Snapshot {
    let views = [
        view(1, "follower", 2),
        view(2, "leader", 2),
        view(3, "follower", 2),
    ];
    Snapshot::build(&views, &events().rows(), T0 + 1000)
}

#[test]
fn a_healthy_cluster_fills_every_pane_at_80x24() {
    let s = cluster_of_three();
    let lines = screen(&s, &View::new(true));
    let text = lines.join("\n");
    assert!(lines[0].contains("leader node 2 term 5"), "{text}");
    assert!(lines[0].contains("3/3 up"), "{text}");
    assert!(lines[0].contains("04:33:21Z"), "{text}");
    // The nodes table: header fits in 80 columns, three rows, one leader.
    let header = find(&lines, "ADDRESS");
    for col in [
        "ID", "ROLE", "TERM", "LOG", "APPLIED", "LAG", "HB", "UP", "SERVE", "VIP",
    ] {
        assert!(header.contains(col), "column {col} cut off: {header}");
    }
    let rows: Vec<&String> = lines.iter().filter(|l| l.contains(":7481")).collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert_eq!(
        rows.iter().filter(|l| l.contains("leader")).count(),
        1,
        "{text}"
    );
    let n1 = find(&lines, "10.99.0.11:7481");
    // Node 1: its lag (1) and heartbeat (10 ms) from the leader's status.
    let cells: Vec<&str> = n1.trim_matches('|').split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "1",
            "10.99.0.11:7481",
            "follower",
            "5",
            "41",
            "40",
            "1",
            "10ms",
            "yes",
            "no",
            "no"
        ],
        "{n1}"
    );
    let n2 = find(&lines, "10.99.0.12:7481");
    assert!(n2.contains("leader") && n2.contains("yes   yes"), "{n2}");
    // Leases: 180 of 200 used (bound + declined) with a bar; 90 % and over.
    assert!(find(&lines, "10.99.0.0/16").contains("180/200"), "{text}");
    let bar = find(&lines, "90%");
    assert!(bar.contains("[####") && bar.contains("#..]"), "{bar}");
    assert!(find(&lines, "10.98.0.0/24").contains("0/100"), "{text}");
    // Traffic: the three nodes' rates summed.
    assert!(find(&lines, "DHCP in").contains("30.0/s"), "{text}");
    assert!(find(&lines, "TFTP data").contains("9.0 MiB/s"), "{text}");
    assert!(find(&lines, "HTTP reqs").contains("6.0/s"), "{text}");
    assert!(find(&lines, "TFTP active").contains('6'), "{text}");
    // XDP: summed over the nodes.
    let dhcp = find(&lines, "dhcp ");
    assert!(
        dhcp.contains("3000") && dhcp.contains("21") && dhcp.contains('9'),
        "{dhcp}"
    );
    // Events, oldest first, labelled by node; artifacts with holders.
    let ev: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(" n2 ") || l.contains(" n3 "))
        .collect();
    assert_eq!(ev.len(), 4, "{text}");
    assert!(ev[0].contains("04:33:20 n2 elect"), "{text}");
    assert!(ev[2].contains("n2 trans serving, up in 35.2 ms"), "{text}");
    assert!(ev[3].contains("n3 lost"), "{text}");
    let art = find(&lines, "vmlinuz");
    assert!(art.contains("12.0M") && art.contains(".23"), "{art}");
    // Nothing but ASCII in ASCII mode (the Linux console without UTF-8).
    assert!(text.is_ascii(), "{text}");
}

#[test]
fn a_dead_node_is_shown_unreachable_with_its_reason() {
    let views = [
        dead(2, "Connection refused"),
        view(1, "leader", 1),
        view(3, "follower", 1),
    ];
    let s = Snapshot::build(&views, &[], T0);
    let n2 = s
        .nodes
        .iter()
        .find(|n| n.addr == "10.99.0.12:7481")
        .expect("row of node 2");
    // Its id is known from the others' member lists, nothing else is.
    assert_eq!(n2.id, Some(2));
    assert!(!n2.reachable && n2.role.is_none() && n2.term.is_none());
    assert_eq!(
        s.leader,
        Some((1, 5)),
        "the dead node's old claim to lead is ignored"
    );
    let lines = screen(&s, &View::new(false));
    let text = lines.join("\n");
    assert!(
        lines[0].contains("2/3 up") && lines[0].contains("leader node 1"),
        "{text}"
    );
    let row = find(&lines, "10.99.0.12:7481");
    let cells: Vec<&str> = row.trim_matches('│').split_whitespace().collect();
    // Lag and heartbeat are the leader's view of it; the rest is unknown.
    assert_eq!(
        cells,
        [
            "2",
            "10.99.0.12:7481",
            "-",
            "-",
            "-",
            "-",
            "2",
            "20ms",
            "NO",
            "-",
            "-"
        ],
        "{row}"
    );
    assert!(
        find(&lines, "node 2: Connection refused").contains('─'),
        "{text}"
    );
    // Rows stay in id order whatever order the pollers answer in.
    let ids: Vec<Option<u64>> = s.nodes.iter().map(|n| n.id).collect();
    assert_eq!(ids, [Some(1), Some(2), Some(3)]);
}

#[test]
fn with_no_leader_reachable_the_header_says_so() {
    let views = [
        dead(1, "timed out"),
        dead(2, "Connection refused"),
        view(3, "candidate", 2),
    ];
    let s = Snapshot::build(&views, &[], T0);
    assert_eq!(s.leader, None);
    let lines = screen(&s, &View::new(true));
    assert!(
        lines[0].contains("NO LEADER") && lines[0].contains("1/3 up"),
        "{}",
        lines[0]
    );
    // Node 1 never answered since it died: its id is still known.
    assert_eq!(s.nodes[0].id, Some(1));
    // No leader: no lag or heartbeat column to fill.
    assert!(s
        .nodes
        .iter()
        .all(|n| n.lag.is_none() && n.heartbeat_ms.is_none()));
    // Leases still come from the one node that answers.
    assert_eq!(s.subnets.len(), 2);
}

#[test]
fn keys_quit_move_focus_scroll_and_toggle_help() {
    let key = |c| KeyEvent::new(c, KeyModifiers::NONE);
    let mut v = View::new(true);
    assert_eq!(on_key(&mut v, key(KeyCode::Tab)), KeyAction::Redraw);
    assert_eq!(v.focus, Pane::Leases);
    for _ in 0..5 {
        on_key(&mut v, key(KeyCode::Tab));
    }
    assert_eq!(v.focus, Pane::Nodes, "tab wraps around the six panes");
    on_key(&mut v, key(KeyCode::BackTab));
    assert_eq!(v.focus, Pane::Artifacts);
    assert_eq!(on_key(&mut v, key(KeyCode::Char('?'))), KeyAction::Redraw);
    assert!(v.help);
    let lines = screen(&cluster_of_three(), &v);
    assert!(find(&lines, "Help").contains('+'));
    find(&lines, "q, Ctrl-C     quit");
    on_key(&mut v, key(KeyCode::Esc));
    assert!(!v.help);
    assert_eq!(on_key(&mut v, key(KeyCode::Char('x'))), KeyAction::Nothing);
    assert_eq!(on_key(&mut v, key(KeyCode::Char('q'))), KeyAction::Quit);
    assert_eq!(
        on_key(
            &mut v,
            KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)
        ),
        KeyAction::Quit
    );
    // The focused pane is marked without colour.
    let lines = screen(&cluster_of_three(), &v);
    assert!(lines.iter().any(|l| l.contains("[Artifacts]")));
    assert!(lines.iter().any(|l| l.contains(" Events ")));
}

#[test]
fn events_scroll_back_from_the_newest() {
    let mut log = EventLog::default();
    let evs: Vec<EventDto> = (1..=40)
        .map(|i| EventDto {
            seq: i,
            at_ms: T0 + i * 1000,
            kind: "election".into(),
            message: format!("event number {i}"),
        })
        .collect();
    log.add(1, 1, &evs);
    let s = Snapshot::build(&[view(1, "leader", 1)], &log.rows(), T0);
    let mut v = View::new(true);
    let lines = screen(&s, &v);
    assert!(lines.iter().any(|l| l.contains("event number 40")));
    assert!(!lines.iter().any(|l| l.contains("event number 30 ")));
    v.focus = Pane::Events;
    on_key(&mut v, KeyEvent::new(KeyCode::PageUp, KeyModifiers::NONE));
    on_key(&mut v, KeyEvent::new(KeyCode::PageUp, KeyModifiers::NONE));
    let lines = screen(&s, &v);
    let text = lines.join("\n");
    assert!(!text.contains("event number 40"), "{text}");
    assert!(
        text.contains("event number 30") && text.contains("10 newer below"),
        "{text}"
    );
    on_key(&mut v, KeyEvent::new(KeyCode::End, KeyModifiers::NONE));
    assert!(screen(&s, &v).join("\n").contains("event number 40"));
}

#[test]
fn rates_are_counter_differences_and_survive_a_restart() {
    let m = |dhcp_in: u64, bytes: u64| {
        Counters::read(&prom::parse(&format!(
            "tandem_dhcp_packets_total{{type=\"discover\",direction=\"in\"}} {dhcp_in}\n\
             tandem_dhcp_packets_total{{type=\"request\",direction=\"in\"}} {dhcp_in}\n\
             tandem_dhcp_packets_total{{type=\"offer\",direction=\"out\"}} 5\n\
             tandem_tftp_bytes_total {bytes}\n"
        )))
    };
    let r = m(30, 4096).rates_since(&m(10, 0), 2.0);
    assert!((r.dhcp_in - 20.0).abs() < 1e-9, "{r:?}");
    assert!(r.dhcp_out.abs() < 1e-9, "{r:?}");
    assert!((r.tftp_bytes - 2048.0).abs() < 1e-9, "{r:?}");
    // A restarted node's counters start again at zero: counted from there.
    let r = m(2, 0).rates_since(&m(100, 0), 1.0);
    assert!((r.dhcp_in - 4.0).abs() < 1e-9, "{r:?}");
    assert_eq!(
        Counters::read(&[]).rates_since(&Counters::default(), 0.0),
        Rates::default()
    );
}

#[test]
fn bars_and_numbers_stay_in_their_cells() {
    use super::render::{bar, bytes, clock, compact};
    assert_eq!(bar(0, 100, 12), "[..........]");
    assert_eq!(bar(1, 1000, 12), "[#.........]", "any use shows");
    assert_eq!(bar(50, 100, 12), "[#####.....]");
    assert_eq!(bar(100, 100, 12), "[##########]");
    assert_eq!(bar(5, 0, 6), "[....]");
    assert_eq!(compact(9999), "9999");
    assert_eq!(compact(12_345), "12.3k");
    assert_eq!(compact(12_345_678), "12.3M");
    assert_eq!(bytes(512.0), "512 B");
    assert_eq!(bytes(1536.0), "1.5 KiB");
    assert_eq!(clock(T0), "04:33:20");
}
