//! Real PXE clients: QEMU VMs (TCG) on a tap in the lab bridge, and the
//! boot files they load, built in the test.
//!
//! - [`cloud_kernel`]: the Debian cloud kernel (LZ4, ~2× faster under TCG
//!   than the generic one, TOOLCHAIN.md).
//! - [`build_initramfs`]: busybox whose `/init` prints [`MARKER`] on ttyS0
//!   and powers off.
//! - [`vm_tap`]: a tap on the bridge and the IPv6 RA answerer on it
//!   (`tests/scripts/ra_zero.py`): iPXE otherwise waits for IPv6
//!   autoconfiguration before it boots.
//! - [`Vm::start`]: the VM, with QEMU's iPXE NIC ROM under `SeaBIOS`, or
//!   OVMF with no NIC ROM (its own PXE client); [`Vm::wait_marker`].

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{describe_output, lab, wait_until, Lab, LabProcess};

/// Printed by the initramfs' /init on ttyS0.
pub const MARKER: &str = "TANDEM-PXE-BOOT-OK";
/// A whole boot under TCG takes ~10 s here; the tests' own bound.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(50);
/// OVMF's code and a template of its variable store (Debian `ovmf`).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// The Debian cloud kernel (`linux-image-cloud-amd64`, installed by `cargo xtask deps`).
#[must_use]
pub fn cloud_kernel() -> PathBuf {
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

/// An initramfs (newc cpio) of busybox whose /init prints [`MARKER`] and
/// powers the VM off.
#[must_use]
pub fn build_initramfs(dir: &Path) -> PathBuf {
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

/// Puts each `(name, file)` into the cluster with `tandem artifact put`
/// through node `i`.
pub fn put_artifacts(lab: &Lab, i: usize, files: &[(&str, &Path)]) {
    for (name, src) in files {
        let src = src.to_str().expect("lab paths are UTF-8");
        let out = lab
            .tandem(i, &["artifact", "put", src, "--name", name])
            .unwrap_or_else(|e| panic!("tandem artifact put {name}: {e:#}"));
        assert!(
            out.status.success(),
            "tandem artifact put {name}: {}",
            describe_output(&out)
        );
    }
}

/// A tap in the switch namespace's bridge for a VM, and the RA answerer on
/// it (its log: `<lab root>/ra_zero.TAP.log`).
#[must_use]
pub fn vm_tap(lab: &Lab, tap: &str) -> LabProcess {
    let sw = lab.switch_ns();
    for args in [
        vec!["-n", &sw, "tuntap", "add", "dev", tap, "mode", "tap"],
        vec!["-n", &sw, "link", "set", tap, "master", lab::BRIDGE, "up"],
    ] {
        let st = Command::new("ip").args(&args).status().expect("ip");
        assert!(st.success(), "ip {args:?}");
    }
    let script = lab::workspace_root().join("tests/scripts/ra_zero.py");
    let log = lab.root().join(format!("ra_zero.{tap}.log"));
    let ra = lab
        .spawn_in(
            &sw,
            "/usr/bin/python3",
            &[script.to_str().expect("UTF-8 path"), tap],
            &log,
        )
        .expect("starting the RA answerer");
    // scapy takes a second or two to import; an RS sent before it sniffs
    // would go unanswered (and iPXE sends only a few).
    assert!(
        wait_until(Duration::from_secs(20), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("listening")) || !ra.is_running()
        }) && ra.is_running(),
        "the RA answerer did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    ra
}

/// What the VM boots with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// `SeaBIOS` with QEMU's iPXE NIC ROM (`ipxe-qemu`): user-class iPXE, arch 0.
    BiosIpxeRom,
    /// OVMF with no NIC ROM (`romfile=`): OVMF's own PXE client, arch 7,
    /// no user-class.
    OvmfNoRom,
}

/// A running VM and its serial console log.
pub struct Vm {
    pub process: LabProcess,
    pub serial: PathBuf,
    /// QEMU's HMP monitor socket, for [`Vm::sendkey`] and [`Vm::type_line`].
    pub monitor: PathBuf,
    pub started: Instant,
}

impl Vm {
    /// Starts a VM named `name` (its files: `<lab root>/NAME.*`) with NIC
    /// `mac` on `tap`.
    #[must_use]
    pub fn start(lab: &Lab, name: &str, tap: &str, mac: &str, fw: Firmware) -> Vm {
        let serial = lab.root().join(format!("{name}.serial.log"));
        let netdev = format!("tap,id=n0,ifname={tap},script=no,downscript=no");
        let mut nic = format!("virtio-net-pci,netdev=n0,mac={mac}");
        let serial_arg = format!("file:{}", serial.display());
        let monitor = lab.root().join(format!("{name}.monitor.sock"));
        let monitor_arg = format!("unix:{},server=on,wait=off", monitor.display());
        let mut args: Vec<String> = [
            "-accel",
            "tcg",
            "-machine",
            "pc,graphics=off",
            "-nodefaults",
            "-display",
            "none",
            "-vga",
            "none",
            "-no-reboot",
            "-serial",
            &serial_arg,
            "-monitor",
            &monitor_arg,
            "-netdev",
            &netdev,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        match fw {
            Firmware::BiosIpxeRom => {
                args.extend(["-m", "256", "-boot", "n"].map(String::from));
            }
            Firmware::OvmfNoRom => {
                let vars = lab.root().join(format!("{name}.OVMF_VARS.fd"));
                std::fs::copy(OVMF_VARS, &vars)
                    .unwrap_or_else(|e| panic!("copying {OVMF_VARS} (Debian ovmf): {e}"));
                nic.push_str(",romfile=");
                args.extend([
                    "-m".to_owned(),
                    "512".to_owned(),
                    "-drive".to_owned(),
                    format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
                    "-drive".to_owned(),
                    format!("if=pflash,format=raw,file={}", vars.display()),
                ]);
            }
        }
        args.extend(["-device".to_owned(), nic]);
        let started = Instant::now();
        let process = lab
            .spawn_in(
                &lab.switch_ns(),
                "qemu-system-x86_64",
                &args,
                &lab.root().join(format!("{name}.qemu.log")),
            )
            .expect("starting qemu-system-x86_64 (qemu-system-x86, ipxe-qemu, ovmf)");
        Vm {
            process,
            serial,
            monitor,
            started,
        }
    }

    /// Presses `keys` (HMP `sendkey` syntax: `ctrl-b`, `shift-p`, `ret`) on
    /// the VM's PS/2 keyboard through the monitor. The firmware reads it
    /// through the BIOS keyboard services, like a real key press.
    pub fn sendkey(&self, keys: &[&str]) {
        use std::io::Write;
        let mut sock = std::os::unix::net::UnixStream::connect(&self.monitor)
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.monitor.display()));
        for k in keys {
            writeln!(sock, "sendkey {k}").expect("writing to the QEMU monitor");
            // QEMU holds each key 100 ms; the BIOS keyboard buffer holds 15
            // keys, so a slower pace than the firmware reads loses none.
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// Types `line` and Enter on the VM's keyboard (see [`Vm::sendkey`]).
    /// Panics on a character [`qcode`] has no key for.
    pub fn type_line(&self, line: &str) {
        let keys: Vec<String> = line
            .chars()
            .map(|c| qcode(c).unwrap_or_else(|| panic!("no key for {c:?}")))
            .chain(std::iter::once("ret".to_owned()))
            .collect();
        self.sendkey(&keys.iter().map(String::as_str).collect::<Vec<_>>());
    }

    /// The serial console so far.
    #[must_use]
    pub fn serial_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial).unwrap_or_default()).into_owned()
    }

    /// Waits for the marker and for the VM to power off; returns the time
    /// from the VM's start to the marker. Panics with the serial log after
    /// [`BOOT_TIMEOUT`].
    #[must_use]
    pub fn wait_marker(&self) -> Duration {
        let ok = wait_until(BOOT_TIMEOUT, || self.serial_text().contains(MARKER));
        let took = self.started.elapsed();
        assert!(
            ok,
            "no {MARKER} on the serial console within {BOOT_TIMEOUT:?}; serial log:\n{}",
            self.serial_text()
        );
        // poweroff -f ends QEMU.
        assert!(
            self.process.wait_timeout(Duration::from_secs(10)).is_some(),
            "the VM did not power off after the marker"
        );
        took
    }
}

/// The HMP `sendkey` name of the key (with shift if needed) that types `c`
/// on a US keyboard; `None` for characters the tests do not need.
#[must_use]
pub fn qcode(c: char) -> Option<String> {
    Some(match c {
        'a'..='z' | '0'..='9' => c.to_string(),
        'A'..='Z' => format!("shift-{}", c.to_ascii_lowercase()),
        ' ' => "spc".to_owned(),
        '-' => "minus".to_owned(),
        '_' => "shift-minus".to_owned(),
        '.' => "dot".to_owned(),
        '/' => "slash".to_owned(),
        ':' => "shift-semicolon".to_owned(),
        '=' => "equal".to_owned(),
        '&' => "shift-7".to_owned(),
        _ => return None,
    })
}

/// The service config of the VM boot tests: the lab's subnet and pool, a
/// reservation for the VM (`mac`, `ip`) naming the profile `linux`, which
/// boots `kernel` with `initrd` (artifact names or URLs) on the serial
/// console; BIOS PXE ROMs get `undionly.kpxe`.
#[must_use]
pub fn boot_service_toml(mac: &str, ip: &str, kernel: &str, initrd: &str) -> String {
    format!(
        r#"[[subnet]]
cidr = "10.99.0.0/16"
pools = ["10.99.1.1-10.99.1.200"]
lease_time = 600
profile = "linux"

[[reservation]]
mac = "{mac}"
ip = "{ip}"
profile = "linux"

[[profile]]
name = "linux"
bios = "undionly.kpxe"
kernel = "{kernel}"
initrd = "{initrd}"
cmdline = "console=ttyS0 panic=-1 quiet"
"#
    )
}
