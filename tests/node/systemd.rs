//! systemd: the daemon under the `sd_notify` protocol, with exactly the
//! capabilities `deploy/systemd/tandem.service` gives it. The test is the
//! service manager: it binds a real unix datagram socket as `NOTIFY_SOCKET`,
//! sets `WATCHDOG_USEC`, and runs the daemon through `setpriv` with the
//! unit's `CapabilityBoundingSet` (and `NoNewPrivileges`).
//!
//! It checks that `READY=1` comes only once the node has started (a fresh
//! node: leading, awaiting its service config; a configured one: serving,
//! read from its own log and `/v1/status` at the moment READY arrives), that
//! `STATUS=` follows the transitions, that `WATCHDOG=1` keeps coming at
//! `WATCHDOG_USEC`/2, that `STOPPING=1` comes on SIGTERM, and that the node
//! serves a real DHCP client with the reduced capabilities.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tandem_tests::clients::udhcpc_lease;
use tandem_tests::{apply, phase, status, tandem_bin, Lab};

use super::{service_toml, DHCP_TIMEOUT, SERVING_TIMEOUT};

/// The watchdog interval the test asks for: 1 s, so WATCHDOG=1 every 0.5 s.
const WATCHDOG_USEC: u64 = 1_000_000;

/// One message as it arrived.
struct Msg {
    at: Instant,
    text: String,
}

/// The service manager's end of `NOTIFY_SOCKET`.
struct Manager {
    sock: UnixDatagram,
    path: PathBuf,
    seen: Vec<Msg>,
}

impl Manager {
    fn bind(dir: &Path) -> Manager {
        let path = dir.join("notify.sock");
        let sock =
            UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("binding {}: {e}", path.display()));
        Manager {
            sock,
            path,
            seen: Vec::new(),
        }
    }

    /// Receives until a message has a line `want` (or starts with it, for
    /// `STATUS=…`) or `timeout` passes; returns that message's text.
    fn wait_for(&mut self, want: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {want:?} from the daemon within {timeout:?}; got {:?}",
                self.texts()
            );
            self.sock
                .set_read_timeout(Some(left))
                .expect("read timeout");
            let Ok(n) = self.sock.recv(&mut buf) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.seen.push(Msg {
                at: Instant::now(),
                text: text.clone(),
            });
            if text.lines().any(|l| l.starts_with(want)) {
                return text;
            }
        }
    }

    fn texts(&self) -> Vec<&str> {
        self.seen.iter().map(|m| m.text.as_str()).collect()
    }

    /// The `STATUS=` values seen so far, in order.
    fn statuses(&self) -> Vec<String> {
        self.seen
            .iter()
            .flat_map(|m| m.text.lines())
            .filter_map(|l| l.strip_prefix("STATUS="))
            .map(str::to_owned)
            .collect()
    }
}

/// The capabilities of `CapabilityBoundingSet=` in the shipped unit, as
/// setpriv spells them (`+net_admin,…`).
fn unit_capabilities() -> String {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/tandem.service");
    let text = std::fs::read_to_string(&unit)
        .unwrap_or_else(|e| panic!("reading {}: {e}", unit.display()));
    let caps: Vec<String> = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet=")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase()))
        .collect();
    assert!(caps.len() >= 4, "{caps:?}");
    caps.join(",")
}

/// This run's part of node 1's log (after the lab's last start marker).
fn this_run_log(lab: &Lab) -> String {
    let log = std::fs::read_to_string(lab.node_log_path(1)).unwrap_or_default();
    let start = log.rfind("=== lab: starting node 1").unwrap_or(0);
    log[start..].to_owned()
}

fn start(lab: &Lab, m: &Manager, caps: &str) {
    let bounding = format!("-all,{caps}");
    let wrapper = [
        "setpriv",
        "--bounding-set",
        &bounding,
        "--inh-caps=-all",
        "--no-new-privs",
        "--",
    ];
    let sock = m.path.to_str().expect("lab paths are UTF-8");
    let usec = WATCHDOG_USEC.to_string();
    lab.start_node_with(
        1,
        &tandem_bin(),
        &wrapper,
        &[("NOTIFY_SOCKET", sock), ("WATCHDOG_USEC", &usec)],
    )
    .unwrap_or_else(|e| panic!("starting node 1 under setpriv: {e:#}"));
}

#[test]
#[allow(clippy::too_many_lines)] // one story: fresh start, serve, watchdog, stop, restart
fn notify_ready_status_watchdog_stopping_with_the_units_capabilities() {
    let bin = tandem_bin();
    let lab = Lab::builder()
        .nodes(1)
        .clients(1)
        .tandem_bin(&bin)
        .build()
        .expect("building the lab");
    let mut m = Manager::bind(lab.root());
    let caps = unit_capabilities();

    phase(&format!(
        "fresh node under setpriv (bounding set {caps}), NOTIFY_SOCKET and WATCHDOG_USEC={WATCHDOG_USEC}"
    ));
    start(&lab, &m, &caps);
    let ready = m.wait_for("READY=1", SERVING_TIMEOUT);
    let st = status(&lab, 1).expect("status answers once READY=1 came");
    println!(
        "READY: {ready:?}; status role {} serving {}",
        st["role"], st["serving"]
    );
    assert_eq!(st["role"], "leader", "{st}");
    assert_eq!(st["serving"], false, "a fresh node does not serve: {st}");
    assert!(
        ready.contains("STATUS=leader, not serving: no service config"),
        "READY carries the state: {ready:?}"
    );
    assert_eq!(
        m.texts().iter().filter(|t| t.contains("READY=1")).count(),
        1
    );

    phase("tandem apply: STATUS says serving");
    apply(&lab, 1, &service_toml(&[]));
    let serving = m.wait_for("STATUS=leader, serving, term ", SERVING_TIMEOUT);
    println!("{serving:?}");
    assert_eq!(
        status(&lab, 1).expect("status")["serving"],
        true,
        "STATUS said serving"
    );

    phase("with the unit's capabilities: XDP attached, Raft priority raised, a real DHCP lease");
    let log = this_run_log(&lab);
    assert!(log.contains("XDP steering attached"), "{log}");
    assert!(
        !log.contains("cannot raise the Raft threads' priority"),
        "CAP_SYS_NICE is in the set: {log}"
    );
    let lease = udhcpc_lease(&lab, 1, &[], DHCP_TIMEOUT).expect("a lease from the node");
    println!("lease {}", lease.lease.ip);

    phase("WATCHDOG=1 keeps coming, every WATCHDOG_USEC/2");
    let from = m.seen.len();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(4) {
        m.wait_for("WATCHDOG=1", Duration::from_secs(2));
    }
    let pings: Vec<Instant> = m.seen[from..]
        .iter()
        .filter(|x| x.text.lines().any(|l| l == "WATCHDOG=1"))
        .map(|x| x.at)
        .collect();
    let gaps: Vec<f64> = pings
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    println!("watchdog gaps (s): {gaps:.3?}");
    let half = Duration::from_micros(WATCHDOG_USEC / 2).as_secs_f64();
    assert!(gaps.len() >= 6, "too few pings in 4 s: {gaps:?}");
    for g in &gaps {
        assert!(
            (half * 0.5..half * 1.6).contains(g),
            "a watchdog gap of {g:.3} s; want about {half} s (all: {gaps:?})"
        );
    }
    #[allow(clippy::cast_precision_loss)]
    let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
    assert!(
        (half * 0.8..half * 1.2).contains(&mean),
        "mean gap {mean:.3} s"
    );

    phase("SIGTERM: STOPPING=1, a clean exit");
    lab.signal_node(1, libc::SIGTERM).expect("SIGTERM");
    let stopping = m.wait_for("STOPPING=1", Duration::from_secs(5));
    assert!(stopping.contains("STATUS=stopping"), "{stopping:?}");
    let p = lab.node_process(1).expect("started");
    let exit = p.wait_timeout(Duration::from_secs(10)).expect("it exits");
    assert!(exit.success(), "exit {exit:?}");

    phase("restart with the config applied: READY=1 only once serving");
    let before = m.seen.len();
    start(&lab, &m, &caps);
    let ready = m.wait_for("READY=1", SERVING_TIMEOUT);
    // The log first: the daemon writes "step 5: serving" before it notifies.
    let log = this_run_log(&lab);
    assert!(
        log.contains("step 5: serving"),
        "READY=1 came before the node served; its log then:\n{log}"
    );
    assert!(ready.contains("STATUS=leader, serving, term "), "{ready:?}");
    assert_eq!(status(&lab, 1).expect("status")["serving"], true);
    let states: Vec<String> = m.statuses();
    println!("STATUS lines: {states:?}");
    // Each change is sent once: no two equal lines in a row.
    assert!(states.windows(2).all(|w| w[0] != w[1]), "{states:?}");
    assert!(m.seen.len() > before);
}
