//! Real PXE boots: a QEMU VM (TCG, QEMU's iPXE NIC ROM from `ipxe-qemu`,
//! `-boot n`) on a tap in the lab bridge gets DHCP from the VIP, chains the
//! script rendered for its reservation over HTTP (`/boot/MAC.ipxe`), loads
//! the Debian cloud kernel and a busybox initramfs over HTTP, and boots;
//! its /init prints a marker on the serial console and powers off.
//!
//! The VM's IPv6 router solicitation is answered on its tap with a router
//! advertisement of lifetime 0 (`tests/scripts/ra_zero.py`), or iPXE would
//! wait ~15 s for IPv6 autoconfiguration (TOOLCHAIN.md).
//!
//! The UEFI HTTP boot row is driven by dhclient posing as one (vendor class
//! `HTTPClient`, option 93 = 16): it must get the binary's URL and option 60
//! echoed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tandem_tests::clients::dhclient_with;
use tandem_tests::metrics::counter;
use tandem_tests::{apply, lab, phase, start_lab, wait_single_server, Lab, LabProcess};

/// The VM's NIC: its reservation names the profile with the kernel.
const VM_MAC: &str = "52:54:00:99:00:01";
const VM_IP: &str = "10.99.4.1";
/// Printed by the initramfs' /init on ttyS0.
const MARKER: &str = "TANDEM-PXE-BOOT-OK";
/// A whole boot under TCG takes ~10 s here; the test's own bound.
const BOOT_TIMEOUT: Duration = Duration::from_secs(50);

fn service_toml() -> String {
    format!(
        r#"[[subnet]]
cidr = "10.99.0.0/16"
pools = ["10.99.1.1-10.99.1.200"]
lease_time = 600
profile = "linux"

[[reservation]]
mac = "{VM_MAC}"
ip = "{VM_IP}"
profile = "linux"

[[profile]]
name = "linux"
bios = "undionly.kpxe"
kernel = "vmlinuz"
initrd = "initrd.img"
cmdline = "console=ttyS0 panic=-1 quiet"
"#
    )
}

/// The Debian cloud kernel (`linux-image-cloud-amd64`, installed by `cargo xtask deps`).
fn cloud_kernel() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/boot")
        .expect("reading /boot")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-") && n.ends_with("-cloud-amd64"))
        })
        .collect();
    found.sort();
    found
        .pop()
        .expect("no /boot/vmlinuz-*-cloud-amd64: run `cargo xtask deps` (linux-image-cloud-amd64)")
}

/// An initramfs (newc cpio) of static busybox whose /init prints [`MARKER`]
/// and powers the VM off.
fn build_initramfs(dir: &Path) -> PathBuf {
    let root = dir.join("initramfs");
    for d in ["bin", "dev", "proc"] {
        std::fs::create_dir_all(root.join(d)).expect("initramfs dirs");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("copying /bin/busybox (busybox-static)");
    // busybox-static and busybox replace each other; with the dynamic one,
    // its libraries (and loader) go in too, at the paths ldd names.
    let ldd = Command::new("ldd")
        .arg("/bin/busybox")
        .output()
        .expect("ldd");
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let dest = root.join(lib.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().expect("a library path has a parent"))
            .expect("initramfs lib dir");
        std::fs::copy(lib, &dest).unwrap_or_else(|e| panic!("copying {lib}: {e}"));
    }
    let init = root.join("init");
    std::fs::write(
        &init,
        format!(
            "#!/bin/busybox sh\n/bin/busybox mount -t devtmpfs dev /dev\n\
             /bin/busybox echo {MARKER} > /dev/ttyS0\n/bin/busybox poweroff -f\n"
        ),
    )
    .expect("writing /init");
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).expect("chmod /init");
    let st = Command::new("mknod")
        .arg(root.join("dev/console"))
        .args(["c", "5", "1"])
        .status()
        .expect("mknod");
    assert!(st.success(), "mknod dev/console");
    let out = dir.join("initrd.img");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && find . | cpio -o -H newc --quiet > '{}'",
            root.display(),
            out.display()
        ))
        .status()
        .expect("cpio");
    assert!(st.success(), "building the initramfs");
    out
}

/// Puts the boot files into every node's artifact dir, as `tandem artifact
/// put` will (the one place that knows how artifacts get there).
fn place_artifacts(lab: &Lab, files: &[(&str, &Path)]) {
    for (name, src) in files {
        let src = src.to_str().expect("lab paths are UTF-8");
        let out = lab
            .tandem(1, &["artifact", "put", src, "--name", name])
            .unwrap_or_else(|e| panic!("tandem artifact put {name}: {e:#}"));
        assert!(
            out.status.success(),
            "tandem artifact put {name}: {}",
            tandem_tests::describe_output(&out)
        );
    }
}

/// Waits until node 1 leads its cluster of one (it serves only once a
/// service config is applied).
fn wait_leader(lab: &Lab) {
    assert!(
        tandem_tests::wait_until(Duration::from_secs(20), || tandem_tests::is_leader(lab, 1)),
        "node 1 never led"
    );
}

/// A tap in the switch namespace's bridge for the VM, and the RA answerer on it.
fn vm_tap(lab: &Lab, tap: &str) -> LabProcess {
    let sw = lab.switch_ns();
    for args in [
        vec!["-n", &sw, "tuntap", "add", "dev", tap, "mode", "tap"],
        vec!["-n", &sw, "link", "set", tap, "master", lab::BRIDGE, "up"],
    ] {
        let st = Command::new("ip").args(&args).status().expect("ip");
        assert!(st.success(), "ip {args:?}");
    }
    let script = tandem_tests::lab::workspace_root().join("tests/scripts/ra_zero.py");
    lab.spawn_in(
        &sw,
        "/usr/bin/python3",
        &[script.to_str().expect("UTF-8 path"), tap],
        &lab.root().join("ra_zero.log"),
    )
    .expect("starting the RA answerer")
}

/// Starts the VM on `tap`; its serial console goes to the returned path.
fn start_vm(lab: &Lab, tap: &str) -> (LabProcess, PathBuf) {
    let serial = lab.root().join("serial.log");
    let netdev = format!("tap,id=n0,ifname={tap},script=no,downscript=no");
    let nic = format!("virtio-net-pci,netdev=n0,mac={VM_MAC}");
    let serial_arg = format!("file:{}", serial.display());
    let vm = lab
        .spawn_in(
            &lab.switch_ns(),
            "qemu-system-x86_64",
            &[
                "-accel",
                "tcg",
                "-machine",
                "pc,graphics=off",
                "-m",
                "256",
                "-nodefaults",
                "-display",
                "none",
                "-vga",
                "none",
                "-no-reboot",
                "-serial",
                &serial_arg,
                "-netdev",
                &netdev,
                "-device",
                &nic,
                "-boot",
                "n",
            ],
            &lab.root().join("qemu.log"),
        )
        .expect("starting qemu-system-x86_64 (qemu-system-x86, ipxe-qemu)");
    (vm, serial)
}

fn serial_text(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}

/// Waits for the VM to print the marker and power off; returns the boot time.
fn wait_boot(vm: &LabProcess, serial: &Path, started: Instant) -> Duration {
    let ok = tandem_tests::wait_until(BOOT_TIMEOUT, || serial_text(serial).contains(MARKER));
    let log = serial_text(serial);
    assert!(
        ok,
        "no {MARKER} on the serial console within {BOOT_TIMEOUT:?}; serial log:\n{log}"
    );
    let took = started.elapsed();
    // poweroff -f ends QEMU.
    assert!(
        vm.wait_timeout(Duration::from_secs(10)).is_some(),
        "the VM did not power off after the marker"
    );
    took
}

#[test]
fn ipxe_vm_boots_kernel_and_initrd_over_http_from_the_vip() {
    phase("lab up: one node serving; kernel and busybox initramfs as artifacts");
    let lab = start_lab(1, 0);
    wait_leader(&lab);
    let kernel = cloud_kernel();
    let initrd = build_initramfs(lab.root());
    place_artifacts(&lab, &[("vmlinuz", &kernel), ("initrd.img", &initrd)]);
    apply(&lab, 1, &service_toml());
    assert_eq!(wait_single_server(&lab, Duration::from_secs(20)), 1);
    let ok_before = counter(&lab, 1, "tandem_http_requests_total", &[("code", "200")]);

    phase("VM: PXE (QEMU iPXE ROM) -> DHCP -> /boot/MAC.ipxe -> kernel + initrd over HTTP");
    let _ra = vm_tap(&lab, "vm0");
    let started = Instant::now();
    let (vm, serial) = start_vm(&lab, "vm0");
    let took = wait_boot(&vm, &serial, started);
    println!(
        "=== clean PXE boot: {:.1} s from VM start to the marker",
        took.as_secs_f64()
    );

    phase("the serial log shows the chain, and the server counted the fetches");
    let log = serial_text(&serial);
    let ra = std::fs::read_to_string(lab.root().join("ra_zero.log")).unwrap_or_default();
    println!(
        "=== RA answerer: {} router solicitations answered",
        ra.matches("answered RS").count()
    );
    println!("=== serial console:\n{log}");
    let script = format!("http://{}/boot/{VM_MAC}.ipxe", lab::VIP);
    assert!(log.contains(&script), "iPXE did not fetch {script}:\n{log}");
    // The script, the kernel and the initrd: at least three 200s.
    let ok = counter(&lab, 1, "tandem_http_requests_total", &[("code", "200")]);
    assert!(ok >= ok_before + 3.0, "200s went {ok_before} -> {ok}");
}

#[test]
fn dhclient_as_a_uefi_http_boot_client_gets_the_binary_url() {
    phase("lab up: one node serving, profile with uefi_x64 = snponly.efi");
    let lab = start_lab(1, 1);
    wait_leader(&lab);
    apply(
        &lab,
        1,
        &service_toml().replace("bios = \"undionly.kpxe\"", "uefi_x64 = \"snponly.efi\""),
    );
    assert_eq!(wait_single_server(&lab, Duration::from_secs(20)), 1);

    phase("dhclient sends vendor class HTTPClient and option 93 = 16 (x64 UEFI HTTP)");
    let extra = "option pxe-arch code 93 = unsigned integer 16;\n\
                 send pxe-arch 16;\n\
                 send vendor-class-identifier \"HTTPClient:Arch:00016:UNDI:003001\";\n\
                 also request vendor-class-identifier;\n";
    let l = dhclient_with(&lab, 1, extra, Duration::from_secs(30)).expect("dhclient lease");
    let want = format!("http://{}/snponly.efi", lab::VIP);
    assert_eq!(
        l.lease.boot_file.as_deref(),
        Some(want.as_str()),
        "{:?}",
        l.vars
    );
    assert_eq!(
        l.vars
            .get("new_vendor_class_identifier")
            .map(String::as_str),
        Some("HTTPClient"),
        "option 60 is echoed: {:?}",
        l.vars
    );
}
