//! `cargo xtask demo`: the whole appliance in one minute. One node and one
//! client in a lab; the node gets a service config through `tandem apply`,
//! the client gets a lease with busybox udhcpc and downloads a file over
//! TFTP from the VIP, and the checksums must match.
//!
//! It relies only on the CLI contracts of DESIGN.md section 4:
//! `tandem daemon --config PATH`, `tandem --api URL status --json` (an
//! object with at least `"serving": bool`), `tandem --api URL apply FILE`
//! and `tandem --api URL lease list`.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use lab::{describe_output, sha256_file, Lab, SERVICE_TOML, VIP};

use crate::util::{build_tandem, require_root};

/// The file the client downloads: 1 MiB of random bytes, so a transfer that
/// drops or repeats a block cannot match by accident.
const ARTIFACT: &str = "demo.bin";
const ARTIFACT_SIZE: usize = 1 << 20;

/// From daemon start to `"serving": true`: election, VIP, responders.
const SERVING_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run() -> Result<()> {
    require_root("cargo xtask demo")?;
    println!("=== step 1: dependencies");
    crate::deps::run()?;
    println!("=== step 2: build");
    let bin = build_tandem()?;
    println!("=== step 3: lab with 1 node and 1 client");
    let lab = Lab::builder()
        .nodes(1)
        .clients(1)
        .tandem_bin(&bin)
        .build()?;
    println!(
        "    node 1: {} ({}), client 1: {} ({})",
        lab.node_ns(1),
        lab.node_ip(1),
        lab.client_ns(1),
        lab.client_mac(1)
    );

    let result = scenario(&lab, &bin);
    if result.is_err() {
        lab.dump_logs();
    }
    println!("=== teardown: removing lab {}", lab.prefix());
    drop(lab);
    result.map_err(|e| e.context("demo failed"))
}

fn scenario(lab: &Lab, bin: &Path) -> Result<()> {
    let service = lab.node_dir(1).join("service.toml");
    std::fs::write(&service, SERVICE_TOML)
        .with_context(|| format!("writing {}", service.display()))?;

    println!("=== step 4: start node 1 and wait until it serves");
    lab.start_node(1, bin)?;
    let started = Instant::now();
    wait_serving(lab)?;
    println!("    serving after {:.1} s", started.elapsed().as_secs_f64());

    println!("=== step 5: tandem apply {}", service.display());
    let out = lab.tandem(
        1,
        &["apply", service.to_str().context("non-UTF-8 lab path")?],
    )?;
    ensure!(
        out.status.success(),
        "tandem apply failed: {}",
        describe_output(&out)
    );
    print_indented(&out.stdout);

    println!("=== step 6: a 1 MiB artifact {ARTIFACT} in node 1's artifact dir");
    let artifact = lab.node_artifact_dir(1).join(ARTIFACT);
    let mut bytes = vec![0u8; ARTIFACT_SIZE];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    std::fs::write(&artifact, &bytes).with_context(|| format!("writing {}", artifact.display()))?;
    let want = sha256_file(&artifact)?;

    println!("=== step 7: DHCP: busybox udhcpc in {}", lab.client_ns(1));
    let t = Instant::now();
    let lease = lab.dhcp_lease(1, &[], Duration::from_secs(60))?;
    let dhcp_time = t.elapsed();
    println!(
        "    lease {}/{} router {} dns {:?} domain {} lease-time {} s server {} boot-file {} ({} ms)",
        lease.ip,
        lease.prefix_len,
        lease.router.map_or_else(|| "-".into(), |r| r.to_string()),
        lease.dns,
        lease.domain.as_deref().unwrap_or("-"),
        lease.lease_secs.map_or_else(|| "-".into(), |s| s.to_string()),
        lease.server_id.map_or_else(|| "-".into(), |s| s.to_string()),
        lease.boot_file.as_deref().unwrap_or("-"),
        dhcp_time.as_millis()
    );
    let o = lease.ip.octets();
    ensure!(
        o[..3] == [10, 99, 1] && (1..=200).contains(&o[3]),
        "the lease {} is outside the applied pool 10.99.1.1-10.99.1.200",
        lease.ip
    );

    println!("=== step 8: TFTP: curl tftp://{VIP}/{ARTIFACT} from the client");
    let fetched = lab.root().join("client-demo.bin");
    let t = Instant::now();
    lab.tftp_get(1, ARTIFACT, &fetched, Duration::from_secs(120))?;
    let tftp_time = t.elapsed();
    let got = sha256_file(&fetched)?;
    if got != want {
        bail!("the downloaded file differs: sha256 {got}, want {want}");
    }
    println!(
        "    {} bytes in {:.2} s ({:.1} MiB/s), sha256 {want} matches",
        ARTIFACT_SIZE,
        tftp_time.as_secs_f64(),
        1.0 / tftp_time.as_secs_f64().max(1e-6)
    );

    println!("=== step 9: tandem lease list");
    let out = lab.tandem(1, &["lease", "list"])?;
    ensure!(
        out.status.success(),
        "tandem lease list failed: {}",
        describe_output(&out)
    );
    print_indented(&out.stdout);

    println!("=== summary");
    println!(
        "    node 1 served a DHCP lease ({}) in {} ms",
        lease.ip,
        dhcp_time.as_millis()
    );
    println!(
        "    and {ARTIFACT} (1 MiB) over TFTP in {:.2} s with a matching sha256",
        tftp_time.as_secs_f64()
    );
    Ok(())
}

/// Waits for `status --json` to report `"serving": true`. A fresh node forms
/// a cluster of one by itself and serves once it leads it.
fn wait_serving(lab: &Lab) -> Result<()> {
    let deadline = Instant::now() + SERVING_TIMEOUT;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        if let Some(p) = lab.node_process(1) {
            if let Some(status) = p.try_status() {
                bail!("tandem daemon exited ({status}) before serving");
            }
        }
        match status_serving(lab) {
            Ok(true) => return Ok(()),
            Ok(false) => last = "API answers: serving = false".into(),
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("node 1 did not report \"serving\": true within {SERVING_TIMEOUT:?}; last: {last}")
}

fn status_serving(lab: &Lab) -> Result<bool> {
    let out = lab.tandem(1, &["status", "--json"])?;
    ensure!(
        out.status.success(),
        "tandem status --json: {}",
        describe_output(&out)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("tandem status --json printed no JSON")?;
    v.get("serving")
        .and_then(serde_json::Value::as_bool)
        .context("tandem status --json has no boolean \"serving\"")
}

fn print_indented(bytes: &[u8]) {
    for line in String::from_utf8_lossy(bytes).lines() {
        println!("    {line}");
    }
}
