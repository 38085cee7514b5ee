//! TFTP with real clients: tftp-hpa (lock-step, 512-byte blocks) and atftp
//! (blksize 1468, windowsize 4) download a few-MB random file intact; a
//! traversal attempt and a write request get error packets.

use std::io::Read;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use tandem_tests::lab::sha256_file;
use tandem_tests::metrics::{counter, wait_counter_above};
use tandem_tests::{describe_output, lab, phase, Lab};

use super::{node_lab, service_toml};

/// One TFTP client run; 4 MiB in 512-byte lock-step blocks takes a second or two.
const TFTP_TIMEOUT: Duration = Duration::from_secs(60);
/// Size of the random boot file.
const FILE_SIZE: u64 = 4 << 20;
/// A static address for the client: TFTP needs one, and this skips DHCP.
const CLIENT_CIDR: &str = "10.99.3.1/16";

fn vip() -> String {
    lab::VIP.to_string()
}

/// A node serving, one client with [`CLIENT_CIDR`], and `name` in the
/// artifact dir holding [`FILE_SIZE`] random bytes.
fn tftp_lab(name: &str) -> Lab {
    let lab = node_lab(1, |_| service_toml(&[]));
    lab.add_client_ip(1, CLIENT_CIDR).expect("client address");
    let path = lab.node_artifact_dir(1).join(name);
    let mut bytes = Vec::new();
    std::fs::File::open("/dev/urandom")
        .and_then(|f| f.take(FILE_SIZE).read_to_end(&mut bytes))
        .expect("reading /dev/urandom");
    std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    lab
}

fn run(lab: &Lab, program: &str, args: &[&str]) -> Output {
    lab.exec_in(&lab.client_ns(1), program, args, TFTP_TIMEOUT)
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e:#}"))
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("lab paths are UTF-8")
}

/// Whether a client printed that the server answered with an error packet:
/// tftp-hpa prints `Error code N: MESSAGE` (and exits 0 all the same), atftp
/// `error received from server <MESSAGE>`. A timeout reads differently
/// ("Transfer timed out", "timeout: retrying"), so it does not pass for a refusal.
fn got_error_packet(out: &Output) -> bool {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.contains("Error code ") || text.contains("error received from server")
}

/// Whether `dest` got any of the file (clients may leave an empty file behind).
fn got_bytes(dest: &Path) -> bool {
    std::fs::metadata(dest).is_ok_and(|m| m.len() > 0)
}

#[test]
fn tftp_hpa_and_atftp_download_intact() {
    let lab = tftp_lab("boot.img");
    let want =
        sha256_file(&lab.node_artifact_dir(1).join("boot.img")).expect("sha256 of the source");
    let ok_before = counter(&lab, 1, "tandem_tftp_transfers_total", &[("result", "ok")]);

    phase("tftp-hpa: get boot.img (512-byte blocks, lock-step)");
    let dest = lab.root().join("hpa.img");
    let out = run(
        &lab,
        "tftp",
        &[
            "-m",
            "binary",
            &vip(),
            "-c",
            "get",
            "boot.img",
            path_str(&dest),
        ],
    );
    assert!(
        out.status.success() && !got_error_packet(&out),
        "tftp-hpa get failed: {}",
        describe_output(&out)
    );
    assert_eq!(
        sha256_file(&dest).expect("sha256"),
        want,
        "tftp-hpa got different bytes"
    );

    phase("atftp: get boot.img (blksize 1468, windowsize 4)");
    let dest = lab.root().join("atftp.img");
    let out = run(
        &lab,
        "atftp",
        &[
            "--option",
            "blksize 1468",
            "--option",
            "windowsize 4",
            "-g",
            "-r",
            "boot.img",
            "-l",
            path_str(&dest),
            &vip(),
        ],
    );
    assert!(
        out.status.success(),
        "atftp get failed: {}",
        describe_output(&out)
    );
    assert_eq!(
        sha256_file(&dest).expect("sha256"),
        want,
        "atftp got different bytes"
    );

    phase("the server counted both transfers as ok");
    let ok = wait_counter_above(
        &lab,
        1,
        "tandem_tftp_transfers_total",
        &[("result", "ok")],
        ok_before + 1.0,
        Duration::from_secs(5),
    );
    assert!(
        (ok - ok_before - 2.0).abs() < 0.5,
        "ok transfers went {ok_before} -> {ok}, not by 2"
    );
}

#[test]
fn tftp_traversal_is_denied() {
    let lab = tftp_lab("boot.img");
    let denied_before = counter(&lab, 1, "tandem_tftp_denied_total", &[]);

    phase("tftp-hpa: get ../../etc/passwd");
    let dest = lab.root().join("hpa-passwd");
    let out = run(
        &lab,
        "tftp",
        &[
            "-m",
            "binary",
            &vip(),
            "-c",
            "get",
            "../../etc/passwd",
            path_str(&dest),
        ],
    );
    println!("tftp-hpa said: {}", describe_output(&out));
    assert!(
        got_error_packet(&out),
        "tftp-hpa got no error packet: {}",
        describe_output(&out)
    );
    assert!(
        !got_bytes(&dest),
        "tftp-hpa received data for ../../etc/passwd"
    );

    phase("atftp: get ../../etc/passwd");
    let dest = lab.root().join("atftp-passwd");
    let out = run(
        &lab,
        "atftp",
        &[
            "-g",
            "-r",
            "../../etc/passwd",
            "-l",
            path_str(&dest),
            &vip(),
        ],
    );
    println!("atftp said: {}", describe_output(&out));
    assert!(
        !out.status.success(),
        "atftp succeeded: {}",
        describe_output(&out)
    );
    assert!(
        got_error_packet(&out),
        "atftp got no error packet: {}",
        describe_output(&out)
    );
    assert!(
        !got_bytes(&dest),
        "atftp received data for ../../etc/passwd"
    );

    phase("the server counted the refusals");
    let denied = wait_counter_above(
        &lab,
        1,
        "tandem_tftp_denied_total",
        &[],
        denied_before + 1.0,
        Duration::from_secs(5),
    );
    assert!(
        denied >= denied_before + 2.0,
        "tandem_tftp_denied_total went {denied_before} -> {denied}"
    );
}

#[test]
fn tftp_write_request_is_refused() {
    let lab = tftp_lab("boot.img");
    let upload = lab.root().join("upload.bin");
    std::fs::write(&upload, b"not a boot file\n").expect("writing the upload");

    phase("tftp-hpa: put upload.bin");
    let out = run(
        &lab,
        "tftp",
        &[
            "-m",
            "binary",
            &vip(),
            "-c",
            "put",
            path_str(&upload),
            "upload.bin",
        ],
    );
    println!("tftp-hpa said: {}", describe_output(&out));
    assert!(
        got_error_packet(&out),
        "tftp-hpa put got no error packet: {}",
        describe_output(&out)
    );

    phase("atftp: put upload.bin");
    let out = run(
        &lab,
        "atftp",
        &["-p", "-l", path_str(&upload), "-r", "upload2.bin", &vip()],
    );
    println!("atftp said: {}", describe_output(&out));
    assert!(
        !out.status.success(),
        "atftp put succeeded: {}",
        describe_output(&out)
    );
    assert!(
        got_error_packet(&out),
        "atftp put got no error packet: {}",
        describe_output(&out)
    );

    phase("the artifact dir did not get the files");
    for name in ["upload.bin", "upload2.bin"] {
        let path = lab.node_artifact_dir(1).join(name);
        assert!(!path.exists(), "{} was written", path.display());
    }
}
