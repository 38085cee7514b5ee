//! `cargo xtask demo`: the whole appliance in a couple of minutes, told as a
//! story. Three nodes form a cluster, a real client (busybox udhcpc) gets a
//! lease and downloads a file over TFTP from the VIP (put once with `tandem
//! artifact put`, and held on every node), the lease shows up on a
//! follower, then the leader is killed with SIGKILL and the demo measures how soon a
//! surviving node serves and the client renews the same address.
//!
//! It relies only on the CLI contracts of DESIGN.md section 4:
//! `tandem daemon --config PATH`, `tandem --api URL status --json`,
//! `tandem --api URL cluster join HOST:PORT`, `tandem --api URL apply FILE`,
//! `tandem --api URL artifact put FILE --name N | list [--json]`
//! and `tandem --api URL lease list [--json]`.
//!
//! Every step is timed; the first failing step ends the demo with an error
//! that names it, after the node logs were dumped. The [`Lab`] is dropped on
//! every path, which kills the daemons and deletes the namespaces.

use std::fmt::Write as _;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use lab::{describe_output, sha256_file, DhcpLease, Lab, API_PORT, INTERFACE, SERVICE_TOML, VIP};

use crate::util::{build_tandem, require_root};

const NODES: usize = 3;
const CLIENTS: usize = 2;

/// The file the client downloads: 1 MiB of random bytes, so a transfer that
/// drops or repeats a block cannot match by accident.
const ARTIFACT: &str = "demo.bin";
const ARTIFACT_SIZE: usize = 1 << 20;
/// Where the Debian `ipxe` package puts its binaries.
const IPXE_DIR: &str = "/usr/lib/ipxe";

/// From daemon start to `"serving": true`: election, VIP, responders.
const SERVING_TIMEOUT: Duration = Duration::from_secs(60);
/// After the joins: until all nodes agree on one leader that alone serves.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(20);
/// Until a follower has applied the client's lease.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(10);
/// From the SIGKILL until a survivor serves. The design target is ~0.5 s; a
/// generous bound keeps a slow, shared CI machine from failing the demo.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the failover probe asks each survivor for its status.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// udhcpc's pause between DISCOVERs during the renew (`-T`, whole seconds
/// only). Its default is 3 s; 1 s makes the client-side figure less coarse.
const RENEW_RETRY_SECS: u32 = 1;
/// DISCOVERs the renewing client sends before it gives up (`-t`).
const RENEW_ATTEMPTS: u32 = 30;

pub fn run() -> Result<()> {
    require_root("cargo xtask demo")?;
    let mut story = Story::default();
    story.step("dependencies (cargo xtask deps)", crate::deps::run)?;
    let bin = story.step("build", build_tandem)?;
    let lab = story.step(
        &format!("lab with {NODES} nodes and {CLIENTS} clients"),
        || {
            let lab = Lab::builder()
                .nodes(NODES)
                .clients(CLIENTS)
                .tandem_bin(&bin)
                .build()?;
            for i in 1..=NODES {
                println!("    node {i}: {} {}", lab.node_ns(i), lab.node_ip(i));
            }
            for j in 1..=CLIENTS {
                println!(
                    "    client {j}: {} {} (no address: DHCP)",
                    lab.client_ns(j),
                    lab.client_mac(j)
                );
            }
            println!("    VIP {VIP}: held by whichever node leads");
            Ok(lab)
        },
    )?;

    let result = scenario(&mut story, &lab, &bin);
    if result.is_err() {
        lab.dump_logs();
    }
    println!("=== teardown: removing lab {}", lab.prefix());
    drop(lab);
    match result {
        Ok(figures) => {
            story.summary(&figures);
            Ok(())
        }
        Err(e) => Err(e.context("demo failed")),
    }
}

/// Numbers the steps, times them and remembers the timings for the summary.
#[derive(Default)]
struct Story {
    timings: Vec<(String, Duration)>,
}

impl Story {
    /// Runs one step between a `=== step N` header and its duration. An
    /// error is tagged with the step's number and title, so the one line
    /// `cargo xtask demo` prints on failure says where it stopped.
    fn step<T>(&mut self, title: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let n = self.timings.len() + 1;
        println!("=== step {n}: {title}");
        let started = Instant::now();
        let result = f();
        let took = started.elapsed();
        self.timings.push((title.to_owned(), took));
        match result {
            Ok(v) => {
                println!("    ({:.2} s)", took.as_secs_f64());
                Ok(v)
            }
            Err(e) => {
                println!("    FAILED after {:.2} s", took.as_secs_f64());
                Err(e.context(format!("step {n} ({title})")))
            }
        }
    }

    fn summary(&self, f: &Figures) {
        println!("=== summary");
        for (n, (title, took)) in self.timings.iter().enumerate() {
            println!(
                "    {:>6.2} s  step {:>2}: {title}",
                took.as_secs_f64(),
                n + 1
            );
        }
        println!(
            "    client 1 leased {} in {} ms and fetched {ARTIFACT} (1 MiB) over TFTP in {:.2} s, sha256 matching",
            f.lease.ip,
            f.dhcp.as_millis(),
            f.tftp.as_secs_f64()
        );
        println!(
            "    leader node {} SIGKILLed: node {} serving after {:.3} s (status poll), \
             client 1 renewed {} after {:.3} s",
            f.killed,
            f.new_leader,
            f.serving_after.as_secs_f64(),
            f.lease.ip,
            f.renewed_after.as_secs_f64()
        );
    }
}

/// The figures the summary repeats.
struct Figures {
    lease: DhcpLease,
    dhcp: Duration,
    tftp: Duration,
    killed: usize,
    new_leader: usize,
    serving_after: Duration,
    renewed_after: Duration,
}

#[allow(
    clippy::too_many_lines,
    reason = "the demo's story, step after step; split up it would no longer read top to bottom"
)]
fn scenario(story: &mut Story, lab: &Lab, bin: &Path) -> Result<Figures> {
    story.step(
        &format!("start {NODES} daemons; each leads a cluster of one (serving nothing before a config)"),
        || {
            let started = Instant::now();
            for i in 1..=NODES {
                lab.start_node(i, bin)?;
            }
            for i in 1..=NODES {
                wait_leading(lab, i)?;
                println!(
                    "    node {i} leads its own cluster of one after {:.1} s (no VIP, no clients: no service config yet)",
                    started.elapsed().as_secs_f64()
                );
            }
            Ok(())
        },
    )?;

    let leader = story.step("form the cluster: nodes 2 and 3 join node 1", || {
        let seed = format!("{}:{API_PORT}", lab.node_ip(1));
        for i in 2..=NODES {
            let t = Instant::now();
            let out = lab.join(i, 1)?;
            ensure!(
                out.status.success(),
                "tandem cluster join {seed} on node {i} failed: {}",
                describe_output(&out)
            );
            println!(
                "    node {i}: tandem cluster join {seed} --token <from node 1>: {} ({} ms)",
                String::from_utf8_lossy(&out.stdout).trim(),
                t.elapsed().as_millis()
            );
        }
        let leader = wait_converged(lab, &all_nodes().collect::<Vec<_>>(), false)?;
        print_roles(lab, None)?;
        Ok(leader)
    })?;

    let want = story.step(
        "tandem artifact put: a 1 MiB artifact and the iPXE binaries, held on every node",
        || {
            let via = follower_of(leader);
            let mut bytes = vec![0u8; ARTIFACT_SIZE];
            std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
            let src = lab.root().join(ARTIFACT);
            std::fs::write(&src, &bytes).with_context(|| format!("writing {}", src.display()))?;
            let mut files = vec![(src, ARTIFACT.to_owned())];
            // The profile of SERVICE_TOML boots these; `apply` refuses a
            // profile whose files no node holds.
            for f in ["undionly.kpxe", "ipxe.efi"] {
                files.push((Path::new(IPXE_DIR).join(f), f.to_owned()));
            }
            println!("    through node {via}, a follower: the CLI sends each file to the leader");
            for (path, name) in &files {
                let p = path.to_str().context("non-UTF-8 path")?;
                let out = lab.tandem(via, &["artifact", "put", p, "--name", name])?;
                ensure!(
                    out.status.success(),
                    "tandem artifact put {name} failed: {}",
                    describe_output(&out)
                );
                print_indented(&out.stdout);
            }
            let t = Instant::now();
            let held_everywhere = || {
                all_nodes().all(|i| {
                    lab.tandem(i, &["artifact", "list", "--json"])
                        .ok()
                        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
                        .and_then(|v| v.as_array().cloned())
                        .is_some_and(|l| {
                            l.len() == files.len()
                                && l.iter()
                                    .all(|a| a["holders"].as_array().map_or(0, Vec::len) == NODES)
                        })
                })
            };
            while !held_everywhere() {
                ensure!(
                    t.elapsed() < Duration::from_secs(30),
                    "the artifacts are not held on every node after 30 s"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            println!(
                "    held on all {NODES} nodes {} ms later; tandem artifact list on node {}:",
                t.elapsed().as_millis(),
                leader
            );
            print_indented(&lab.tandem(leader, &["artifact", "list"])?.stdout);
            for i in all_nodes() {
                let got = sha256_file(&lab.node_artifact_dir(i).join(ARTIFACT))?;
                println!("    node {i}: {ARTIFACT} sha256 {got}");
            }
            sha256_file(&files[0].0)
        },
    )?;

    story.step("tandem apply the service config through a follower", || {
        let via = follower_of(leader);
        let service = lab.node_dir(via).join("service.toml");
        std::fs::write(&service, SERVICE_TOML)
            .with_context(|| format!("writing {}", service.display()))?;
        let path = service.to_str().context("non-UTF-8 lab path")?;
        println!(
            "    node {via} is a follower; the CLI follows its redirect to leader node {leader}"
        );
        let out = lab.tandem(via, &["apply", path])?;
        ensure!(
            out.status.success(),
            "tandem apply through node {via} failed: {}",
            describe_output(&out)
        );
        print_indented(&out.stdout);
        let t = Instant::now();
        wait_serving(lab, leader)?;
        println!(
            "    leader node {leader} serves {} ms later (ARP probe, VIP, responders)",
            t.elapsed().as_millis()
        );
        Ok(())
    })?;

    let (lease, dhcp) = story.step(
        &format!(
            "client 1 gets a lease (busybox udhcpc in {})",
            lab.client_ns(1)
        ),
        || {
            let t = Instant::now();
            let lease = lab.dhcp_lease(1, &[], Duration::from_secs(60))?;
            let took = t.elapsed();
            print_lease(&lease, took);
            check_in_pool(&lease)?;
            Ok((lease, took))
        },
    )?;

    let tftp = story.step(
        &format!("client 1 downloads tftp://{VIP}/{ARTIFACT} (curl)"),
        || {
            let fetched = lab.root().join("client-demo.bin");
            let t = Instant::now();
            lab.tftp_get(1, ARTIFACT, &fetched, Duration::from_secs(120))?;
            let took = t.elapsed();
            let got = sha256_file(&fetched)?;
            ensure!(
                got == want,
                "the downloaded file differs: sha256 {got}, want {want}"
            );
            println!(
                "    {ARTIFACT_SIZE} bytes in {:.2} s ({:.1} MiB/s), sha256 {want} matches",
                took.as_secs_f64(),
                1.0 / took.as_secs_f64().max(1e-6)
            );
            Ok(took)
        },
    )?;

    story.step("tandem lease list on a follower (replicated)", || {
        let follower = follower_of(leader);
        let t = Instant::now();
        wait_lease_replicated(lab, follower, lease.ip)?;
        println!(
            "    node {follower} (follower) has the lease (waited {} ms for it):",
            t.elapsed().as_millis()
        );
        let out = lab.tandem(follower, &["lease", "list"])?;
        ensure!(
            out.status.success(),
            "tandem lease list on node {follower} failed: {}",
            describe_output(&out)
        );
        print_indented(&out.stdout);
        Ok(())
    })?;

    let measured = story.step(
        &format!("SIGKILL the leader (node {leader}); measure the failover"),
        || {
            println!("    roles before:");
            print_roles(lab, None)?;
            failover(lab, leader, lease.ip)
        },
    )?;

    story.step("client 1 kept its address; roles after", || {
        println!(
            "    client 1 asked for {} and got {} from the new leader (server id {})",
            lease.ip,
            measured.renewed.ip,
            fmt_opt(measured.renewed.server_id)
        );
        ensure!(
            measured.renewed.ip == lease.ip,
            "client 1 renewed to {} but held {} before the failover",
            measured.renewed.ip,
            lease.ip
        );
        let survivors: Vec<usize> = all_nodes().filter(|&i| i != leader).collect();
        let new_leader = wait_converged(lab, &survivors, true)?;
        ensure!(
            new_leader == measured.new_leader,
            "node {} served first, but the survivors now agree on node {new_leader}",
            measured.new_leader
        );
        println!("    roles after:");
        print_roles(lab, Some(leader))?;
        Ok(())
    })?;

    story.step("client 2 gets a fresh lease from the new leader", || {
        let t = Instant::now();
        let second = lab.dhcp_lease(2, &[], Duration::from_secs(60))?;
        print_lease(&second, t.elapsed());
        check_in_pool(&second)?;
        ensure!(
            second.ip != lease.ip,
            "client 2 got {}, the address client 1 holds: the new leader lost the replicated lease",
            second.ip
        );
        println!(
            "    {} differs from client 1's {}: the new leader allocates around the replicated lease",
            second.ip, lease.ip
        );
        Ok(())
    })?;

    Ok(Figures {
        lease,
        dhcp,
        tftp,
        killed: leader,
        new_leader: measured.new_leader,
        serving_after: measured.serving_after,
        renewed_after: measured.renewed_after,
    })
}

fn all_nodes() -> impl Iterator<Item = usize> + Clone {
    1..=NODES
}

/// Some node other than `leader` (the lowest-numbered one).
fn follower_of(leader: usize) -> usize {
    all_nodes()
        .find(|&i| i != leader)
        .expect("the demo has more than one node")
}

/// What the failover step measured.
struct Failover {
    new_leader: usize,
    /// From the SIGKILL to the first status answer with `"serving": true`.
    serving_after: Duration,
    /// From the SIGKILL to client 1's renewed lease.
    renewed_after: Duration,
    renewed: DhcpLease,
}

/// SIGKILLs node `leader`, then, in parallel: one thread per survivor polls
/// its `status --json` every [`PROBE_INTERVAL`] for `"serving": true`, and
/// client 1 asks (`udhcpc -r`) for the address `ip` it holds. Both clocks
/// start at the signal.
fn failover(lab: &Lab, leader: usize, ip: Ipv4Addr) -> Result<Failover> {
    let survivors: Vec<usize> = all_nodes().filter(|&i| i != leader).collect();
    // The probe's resolution is bounded by what one probe costs: `ip netns
    // exec` + process start + one HTTP round trip. Measure it to say so.
    let t = Instant::now();
    status(lab, survivors[0])?;
    let probe_cost = t.elapsed();
    let script = lab.udhcpc_script()?;
    let script = script
        .to_str()
        .context("temp root path is not UTF-8")?
        .to_owned();

    let found = AtomicBool::new(false);
    let deadline = Instant::now() + FAILOVER_TIMEOUT;
    let killed_at = Instant::now();
    lab.signal_node(leader, libc::SIGKILL)?;
    let (serving, renewal) = std::thread::scope(|s| {
        let probes: Vec<_> = survivors
            .iter()
            .map(|&i| {
                let found = &found;
                s.spawn(move || probe_serving(lab, i, killed_at, deadline, found))
            })
            .collect();
        let client = s.spawn(|| renew(lab, ip, &script, killed_at));
        let serving: Vec<_> = probes
            .into_iter()
            .map(|p| p.join().expect("probe thread panicked"))
            .collect();
        (serving, client.join().expect("renew thread panicked"))
    });
    let p = lab.node_process(leader).expect("the leader was started");
    ensure!(
        p.wait_timeout(Duration::from_secs(5)).is_some(),
        "node {leader} (pid {}) survived SIGKILL",
        p.pid()
    );

    let (new_leader, serving_after) = survivors
        .iter()
        .zip(&serving)
        .filter_map(|(&i, r)| r.as_ref().ok().map(|&d| (i, d)))
        .min_by_key(|&(_, d)| d)
        .with_context(|| {
            let mut why = String::new();
            for (i, r) in survivors.iter().zip(&serving) {
                if let Err(e) = r {
                    let _ = write!(why, "\n  node {i}: {e:#}");
                }
            }
            format!("no surviving node served within {FAILOVER_TIMEOUT:?} of the SIGKILL:{why}")
        })?;
    let (renewed, renewed_after) = renewal?;
    println!(
        "    new leader node {new_leader} serving after {:.3} s (status polled every {} ms per survivor; \
         one probe costs ~{} ms of netns exec + CLI start, so the figure can be late by that much)",
        serving_after.as_secs_f64(),
        PROBE_INTERVAL.as_millis(),
        probe_cost.as_millis()
    );
    println!(
        "    client 1 renewed its address after {:.3} s (udhcpc retransmits every {RENEW_RETRY_SECS} s \
         while nobody answers, so this is rounded up to its next retransmission)",
        renewed_after.as_secs_f64()
    );
    Ok(Failover {
        new_leader,
        serving_after,
        renewed_after,
        renewed,
    })
}

/// Polls node `i` until it reports `"serving": true` (the time since
/// `since`), another probe found the new leader (`found`), or `deadline`.
fn probe_serving(
    lab: &Lab,
    i: usize,
    since: Instant,
    deadline: Instant,
    found: &AtomicBool,
) -> Result<Duration> {
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline && !found.load(Ordering::Relaxed) {
        match status(lab, i) {
            Ok(s) if s.serving => {
                let at = since.elapsed();
                found.store(true, Ordering::Relaxed);
                return Ok(at);
            }
            Ok(s) => last = format!("role {} term {}, not serving", s.role, s.term),
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(PROBE_INTERVAL);
    }
    bail!("did not serve; last: {last}")
}

/// Client 1 asks for `ip` again with busybox udhcpc: DISCOVER with option 50
/// (`-r`), retransmitted every [`RENEW_RETRY_SECS`] until a server answers.
fn renew(lab: &Lab, ip: Ipv4Addr, script: &str, since: Instant) -> Result<(DhcpLease, Duration)> {
    let ns = lab.client_ns(1);
    let (ip, tries, retry) = (
        ip.to_string(),
        RENEW_ATTEMPTS.to_string(),
        RENEW_RETRY_SECS.to_string(),
    );
    let args = [
        "udhcpc", "-f", "-q", "-n", "-i", INTERFACE, "-t", &tries, "-T", &retry, "-s", script,
        "-r", &ip,
    ];
    let timeout = Duration::from_secs(u64::from(RENEW_ATTEMPTS * RENEW_RETRY_SECS) + 10);
    let out = lab.exec_in(&ns, "busybox", &args, timeout)?;
    let at = since.elapsed();
    ensure!(
        out.status.success(),
        "udhcpc -r {ip} in {ns} got no lease: {}",
        describe_output(&out)
    );
    let lease = DhcpLease::parse(&String::from_utf8_lossy(&out.stdout))
        .with_context(|| format!("udhcpc in {ns}: {}", describe_output(&out)))?;
    Ok((lease, at))
}

/// The fields of `tandem status --json` the demo shows.
struct NodeStatus {
    role: String,
    term: u64,
    leader: Option<u64>,
    /// Members the node knows, as `(id, role)`.
    members: Vec<(u64, String)>,
    vip_held: bool,
    serving: bool,
}

fn status(lab: &Lab, i: usize) -> Result<NodeStatus> {
    let out = lab.tandem(i, &["status", "--json"])?;
    ensure!(
        out.status.success(),
        "tandem status --json on node {i}: {}",
        describe_output(&out)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("tandem status --json printed no JSON")?;
    let field = |k: &str| {
        v.get(k)
            .with_context(|| format!("status --json has no {k:?}"))
    };
    let bool_field = |k: &str| {
        field(k)?
            .as_bool()
            .with_context(|| format!("status --json: {k:?} is not a boolean"))
    };
    let members = field("members")?
        .as_array()
        .context("status --json: \"members\" is not an array")?
        .iter()
        .map(|m| {
            let id = m.get("id").and_then(serde_json::Value::as_u64);
            let role = m.get("role").and_then(serde_json::Value::as_str);
            id.zip(role)
                .map(|(id, role)| (id, role.to_owned()))
                .context("status --json: a member without numeric \"id\" and string \"role\"")
        })
        .collect::<Result<_>>()?;
    Ok(NodeStatus {
        role: field("role")?
            .as_str()
            .context("status --json: \"role\" is not a string")?
            .to_owned(),
        term: field("term")?
            .as_u64()
            .context("status --json: \"term\" is not a number")?,
        leader: field("leader")?.as_u64(),
        members,
        vip_held: bool_field("vip_held")?,
        serving: bool_field("serving")?,
    })
}

/// Waits for node `i`'s `status --json` to report role "leader". A fresh
/// node forms a cluster of one by itself; it serves only once a service
/// config is applied.
fn wait_leading(lab: &Lab, i: usize) -> Result<()> {
    let deadline = Instant::now() + SERVING_TIMEOUT;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        if let Some(status) = lab.node_process(i).and_then(|p| p.try_status()) {
            bail!("node {i}'s daemon exited ({status}) before leading");
        }
        match status(lab, i) {
            Ok(s) if s.role == "leader" => return Ok(()),
            Ok(s) => last = format!("role {}", s.role),
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("node {i} did not lead its cluster of one within {SERVING_TIMEOUT:?}; last: {last}")
}

/// Waits for node `i`'s `status --json` to report `"serving": true`.
fn wait_serving(lab: &Lab, i: usize) -> Result<()> {
    let deadline = Instant::now() + SERVING_TIMEOUT;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        if let Some(status) = lab.node_process(i).and_then(|p| p.try_status()) {
            bail!("node {i}'s daemon exited ({status}) before serving");
        }
        match status(lab, i) {
            Ok(s) if s.serving => return Ok(()),
            Ok(s) => last = format!("role {}, serving = false", s.role),
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("node {i} did not report \"serving\": true within {SERVING_TIMEOUT:?}; last: {last}")
}

/// Waits until every node in `nodes` names the same leader, knows all of
/// `nodes` as voters, and (with `serving`) the leader alone serves and holds
/// the VIP; without, no node does. Returns it.
fn wait_converged(lab: &Lab, nodes: &[usize], serving: bool) -> Result<usize> {
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        match converged(lab, nodes, serving) {
            Ok(leader) => return Ok(leader),
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!(
        "nodes {nodes:?} did not settle on one serving leader within {CONVERGE_TIMEOUT:?}: {last}"
    )
}

/// `serving`: whether the leader should serve (a service config is applied).
fn converged(lab: &Lab, nodes: &[usize], serving: bool) -> Result<usize> {
    let statuses = nodes
        .iter()
        .map(|&i| status(lab, i).map(|s| (i, s)))
        .collect::<Result<Vec<_>>>()?;
    let (_, first) = &statuses[0];
    let leader = first.leader.context("no leader known yet")?;
    let leader = usize::try_from(leader)?;
    ensure!(
        nodes.contains(&leader),
        "leader {leader} is not one of {nodes:?}"
    );
    for (i, s) in &statuses {
        ensure!(
            s.leader == first.leader,
            "node {i} names leader {:?}, node {} names {leader}",
            s.leader,
            nodes[0]
        );
        for &n in nodes {
            let role = s
                .members
                .iter()
                .find(|(id, _)| *id == n as u64)
                .map(|(_, r)| r.as_str());
            ensure!(
                matches!(role, Some(r) if r != "learner"),
                "node {i} does not list node {n} as a voter yet ({role:?})"
            );
        }
        let leads = *i == leader && serving;
        ensure!(
            s.serving == leads && s.vip_held == leads,
            "node {i}: serving {} vip_held {} while node {leader} leads",
            s.serving,
            s.vip_held
        );
    }
    Ok(leader)
}

/// Prints a table of every node's view of itself; node `down` (killed on
/// purpose) is shown as down without asking it.
fn print_roles(lab: &Lab, down: Option<usize>) -> Result<()> {
    println!(
        "    {:<5} {:<10} {:>5} {:>7} {:>9} {:>8}",
        "node", "role", "term", "leader", "vip_held", "serving"
    );
    for i in all_nodes() {
        if down == Some(i) {
            println!(
                "    {i:<5} {:<10} {:>5} {:>7} {:>9} {:>8}",
                "down", "-", "-", "-", "-"
            );
            continue;
        }
        let s = status(lab, i).with_context(|| format!("status of node {i}"))?;
        println!(
            "    {i:<5} {:<10} {:>5} {:>7} {:>9} {:>8}",
            s.role,
            s.term,
            fmt_opt(s.leader),
            yes_no(s.vip_held),
            yes_no(s.serving)
        );
    }
    Ok(())
}

/// Waits until node `i`'s `lease list --json` holds a lease for `ip`.
fn wait_lease_replicated(lab: &Lab, i: usize, ip: Ipv4Addr) -> Result<()> {
    let deadline = Instant::now() + REPLICATION_TIMEOUT;
    let want = ip.to_string();
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        let out = lab.tandem(i, &["lease", "list", "--json"])?;
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .context("tandem lease list --json printed no JSON")?;
            let leases = v.as_array().context("lease list --json is not an array")?;
            if leases
                .iter()
                .any(|l| l.get("ip").and_then(serde_json::Value::as_str) == Some(&want))
            {
                return Ok(());
            }
            last = format!("{} lease(s), none for {ip}", leases.len());
        } else {
            last = describe_output(&out);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("node {i} did not list a lease for {ip} within {REPLICATION_TIMEOUT:?}; last: {last}")
}

fn print_lease(lease: &DhcpLease, took: Duration) {
    println!(
        "    lease {}/{} router {} dns {:?} domain {} lease-time {} s server {} boot-file {} ({} ms)",
        lease.ip,
        lease.prefix_len,
        fmt_opt(lease.router),
        lease.dns,
        lease.domain.as_deref().unwrap_or("-"),
        fmt_opt(lease.lease_secs),
        fmt_opt(lease.server_id),
        lease.boot_file.as_deref().unwrap_or("-"),
        took.as_millis()
    );
}

fn check_in_pool(lease: &DhcpLease) -> Result<()> {
    let o = lease.ip.octets();
    ensure!(
        o[..3] == [10, 99, 1] && (1..=200).contains(&o[3]),
        "the lease {} is outside the applied pool 10.99.1.1-10.99.1.200",
        lease.ip
    );
    Ok(())
}

fn fmt_opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn print_indented(bytes: &[u8]) {
    for line in String::from_utf8_lossy(bytes).lines() {
        println!("    {line}");
    }
}
