//! The lab itself, on real namespaces (needs root): it builds the topology,
//! the bridge forwards, processes are confined and killed, and `Drop` leaves
//! nothing behind, also when a test panics.

use std::path::Path;
use std::time::{Duration, Instant};

use lab::{list_namespaces, Lab, LabSpec};

fn lab_namespaces(prefix: &str) -> Vec<String> {
    let family = format!("{prefix}-");
    list_namespaces()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&family))
        .collect()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
#[allow(clippy::too_many_lines, reason = "one story, told phase by phase")]
fn clients_reach_nodes_over_the_bridge_and_drop_removes_everything() {
    println!("=== phase: build 1 node + 2 clients");
    let lab = Lab::builder()
        .nodes(1)
        .clients(2)
        .client_with_ip(1, "10.99.2.1/16")
        .build()
        .unwrap();
    let prefix = lab.prefix().to_owned();
    let root = lab.root().to_path_buf();
    let mut names = lab_namespaces(&prefix);
    names.sort();
    assert_eq!(
        names,
        [
            format!("{prefix}-c1"),
            format!("{prefix}-c2"),
            format!("{prefix}-n1"),
            format!("{prefix}-sw")
        ]
    );
    assert!(lab.node_dir(1).join("data").is_dir() && lab.node_dir(1).join("artifacts").is_dir());

    println!("=== phase: addresses");
    let n1 = lab.node_ns(1);
    let addrs = lab
        .exec_ok(
            &n1,
            "ip",
            &["-4", "-o", "addr", "show", "dev", "eth1"],
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(addrs.contains("10.99.0.11/16"), "node 1 eth1: {addrs}");
    let c2 = lab.client_ns(2);
    let addrs = lab
        .exec_ok(
            &c2,
            "ip",
            &["-4", "-o", "addr", "show", "dev", "eth1"],
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(
        addrs.trim().is_empty(),
        "client 2 is a DHCP client and must have no address: {addrs}"
    );
    let link = lab
        .exec_ok(
            &c2,
            "ip",
            &["-o", "link", "show", "dev", "eth1"],
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(
        link.contains("state UP") && link.contains(&lab.client_mac(2)),
        "client 2 eth1: {link}"
    );
    let lo = lab
        .exec_ok(
            &c2,
            "ip",
            &["-o", "link", "show", "dev", "lo"],
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(lo.contains("UP"), "lo must be up: {lo}");

    println!("=== phase: ping node 1 from client 1 over the bridge");
    let c1 = lab.client_ns(1);
    let out = lab
        .exec_in(
            &c1,
            "busybox",
            &["ping", "-c", "1", "-W", "3", "10.99.0.11"],
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(
        out.status.success(),
        "ping failed: {}",
        lab::describe_output(&out)
    );

    println!("=== phase: a partitioned node is unreachable, and reachable again after healing");
    lab.set_node_connected(1, false).unwrap();
    let out = lab
        .exec_in(
            &c1,
            "busybox",
            &["ping", "-c", "1", "-W", "1", "10.99.0.11"],
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(!out.status.success(), "ping went through a cut link");
    lab.set_node_connected(1, true).unwrap();
    assert!(lab::wait_until(Duration::from_secs(5), || {
        lab.exec_in(
            &c1,
            "busybox",
            &["ping", "-c", "1", "-W", "1", "10.99.0.11"],
            Duration::from_secs(5),
        )
        .is_ok_and(|o| o.status.success())
    }));

    println!("=== phase: processes run inside the namespace and die with the lab");
    let log = lab.root().join("sleep.log");
    let sleeper = lab.spawn_in(&n1, "sleep", &["1000"], &log).unwrap();
    let pid = sleeper.pid();
    assert!(lab::wait_until(Duration::from_secs(5), || {
        lab::netns::namespace_pids(&n1).contains(&pid.cast_signed())
    }));
    assert!(lab
        .exec_in(
            "not-a-lab-ns",
            "true",
            &[] as &[&str],
            Duration::from_secs(1)
        )
        .is_err());

    drop(lab);
    println!("=== phase: after drop");
    assert!(!pid_alive(pid), "pid {pid} survived the lab");
    assert!(sleeper.try_status().is_some());
    assert_eq!(lab_namespaces(&prefix), Vec::<String>::new());
    assert!(!root.exists(), "{} survived the lab", root.display());
}

#[test]
fn exec_in_kills_on_timeout() {
    let lab = Lab::new(LabSpec {
        nodes: 0,
        clients: 1,
        prefix: None,
    })
    .unwrap();
    let c1 = lab.client_ns(1);
    let start = Instant::now();
    // The shell forks `sleep`; the timeout must take the whole group down, or
    // the grandchild would hold the pipe (and this call) for 30 s.
    let err = lab
        .exec_in(
            &c1,
            "sh",
            &["-c", "echo started; sleep 30; echo never"],
            Duration::from_millis(300),
        )
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "timeout took {:?}",
        start.elapsed()
    );
    assert!(
        msg.contains("timed out") && msg.contains("--- stdout:\nstarted\n--- stderr"),
        "{msg}"
    );
    assert!(
        lab::netns::namespace_pids(&c1).is_empty(),
        "sleep survived the timeout"
    );

    let out = lab
        .exec_in(
            &c1,
            "sh",
            &["-c", "echo out; echo err >&2; exit 3"],
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
}

#[test]
fn a_panicking_test_still_cleans_up() {
    let mut prefix = String::new();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let lab = Lab::builder().nodes(2).clients(0).build().unwrap();
        prefix = lab.prefix().to_owned();
        lab.spawn_in(
            &lab.node_ns(2),
            "sleep",
            &["1000"],
            &lab.root().join("s.log"),
        )
        .unwrap();
        panic!("test failure inside a lab");
    }));
    assert!(result.is_err());
    assert!(!prefix.is_empty());
    assert_eq!(lab_namespaces(&prefix), Vec::<String>::new());
}

#[test]
fn node_config_and_daemon_lifecycle() {
    let lab = Lab::builder().nodes(2).build().unwrap();
    let path = lab.write_node_config(2, "[extra]\nkey = 1").unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let dir = lab.node_dir(2).display().to_string();
    assert!(text.starts_with("node_id = 2\n"), "{text}");
    assert!(
        text.contains(&format!("data_dir = \"{dir}/data\"")),
        "{text}"
    );
    assert!(
        text.contains(&format!("artifact_dir = \"{dir}/artifacts\"")),
        "{text}"
    );
    assert!(
        text.contains("listen = \"10.99.0.12:7480\"")
            && text.contains("listen = \"10.99.0.12:7481\""),
        "{text}"
    );
    assert!(
        text.contains("vip = \"10.99.0.10/16\"") && text.ends_with("[extra]\nkey = 1\n"),
        "{text}"
    );

    // A stand-in "daemon" (a shell script taking `daemon --config PATH`) shows
    // the start / signal / restart plumbing without needing tandem built.
    let fake = lab.root().join("fake-tandem");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho \"args: $*\"; echo to-stderr >&2; exec sleep 1000\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let first = lab.start_node(1, &fake).unwrap();
    assert!(
        lab.start_node(1, &fake).is_err(),
        "a running node must not be started twice"
    );
    assert!(lab::wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(lab.node_log_path(1)).is_ok_and(|l| l.contains("to-stderr"))
    }));
    let log = std::fs::read_to_string(lab.node_log_path(1)).unwrap();
    assert!(
        log.contains(&format!(
            "args: daemon --config {}",
            lab.node_config_path(1).display()
        )),
        "{log}"
    );
    assert!(
        lab.node_config_path(1).exists(),
        "start_node writes a default config"
    );

    let second = lab.restart_node(1).unwrap();
    assert_ne!(first.pid(), second.pid());
    assert!(!first.is_running());
    let status = lab.kill_node(1, libc::SIGKILL).unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    assert!(
        lab.kill_node(1, libc::SIGTERM).is_err(),
        "killing a stopped node is an error"
    );
    assert!(!lab.is_node_running(2));
}

/// The client helpers against a known-good server (dnsmasq on the VIP), so
/// that a failing tandem test cannot be blamed on the lab's clients.
#[test]
fn dhcp_and_tftp_clients_work_against_dnsmasq() {
    let lab = Lab::builder().nodes(1).clients(1).build().unwrap();
    let n1 = lab.node_ns(1);
    let t = Duration::from_secs(10);
    lab.exec_ok(&n1, "ip", &["addr", "add", lab::VIP_CIDR, "dev", "eth1"], t)
        .unwrap();
    let tftp_root = lab.node_artifact_dir(1);
    let payload: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(tftp_root.join("blob.bin"), &payload).unwrap();
    let root = lab.root().display().to_string();
    let args = [
        "--no-daemon".to_owned(),
        "--conf-file=/dev/null".into(),
        "--port=0".into(),
        "--user=root".into(),
        "--pid-file=".into(),
        "--interface=eth1".into(),
        "--bind-interfaces".into(),
        "--no-ping".into(),
        "--dhcp-authoritative".into(),
        format!("--dhcp-leasefile={root}/dnsmasq.leases"),
        "--dhcp-range=10.99.1.1,10.99.1.200,255.255.0.0,600".into(),
        "--dhcp-option=option:router,10.99.0.1".into(),
        "--dhcp-option=option:dns-server,10.99.0.1".into(),
        "--dhcp-option=option:domain-name,lab.tandem".into(),
        "--dhcp-boot=undionly.kpxe,,10.99.0.10".into(),
        "--enable-tftp".into(),
        format!("--tftp-root={}", tftp_root.display()),
    ];
    let dnsmasq = lab
        .spawn_in(&n1, "dnsmasq", &args, &lab.root().join("dnsmasq.log"))
        .unwrap();
    // dnsmasq binds while starting; udhcpc retries DISCOVER anyway.
    let lease = lab
        .dhcp_lease(1, &["-T", "1"], Duration::from_secs(30))
        .unwrap_or_else(|e| {
            let log = std::fs::read_to_string(lab.root().join("dnsmasq.log")).unwrap_or_default();
            panic!("{e:#}\ndnsmasq log:\n{log}")
        });
    assert!(dnsmasq.is_running());
    let octets = lease.ip.octets();
    assert!(
        octets[..3] == [10, 99, 1] && (1..=200).contains(&octets[3]),
        "{lease:?}"
    );
    assert_eq!(lease.prefix_len, 16);
    assert_eq!(lease.router, Some("10.99.0.1".parse().unwrap()));
    assert_eq!(lease.domain.as_deref(), Some("lab.tandem"));
    assert_eq!(lease.lease_secs, Some(600));
    assert_eq!(lease.boot_file.as_deref(), Some("undionly.kpxe"));
    let c1 = lab.client_ns(1);
    let addrs = lab
        .exec_ok(&c1, "ip", &["-4", "-o", "addr", "show", "dev", "eth1"], t)
        .unwrap();
    assert!(
        addrs.contains(&format!("{}/16", lease.ip)),
        "the script must configure the lease: {addrs}"
    );

    let dest = lab.root().join("fetched.bin");
    lab.tftp_get(1, "blob.bin", &dest, Duration::from_secs(30))
        .unwrap();
    assert_eq!(
        lab::sha256_file(&dest).unwrap(),
        lab::sha256_file(&tftp_root.join("blob.bin")).unwrap()
    );
    assert!(lab
        .tftp_get(
            1,
            "missing.bin",
            &lab.root().join("missing.bin"),
            Duration::from_secs(30)
        )
        .is_err());
}
