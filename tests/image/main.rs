//! The appliance image in VMs (issue 10; `cargo xtask image-test`, which
//! builds the image and passes it as `TANDEM_IMAGE`). Not part of `cargo
//! xtask test`: one image build takes minutes, and every box is a QEMU TCG
//! VM with OVMF booting the whole of Debian (about 45 s each when alone).
//!
//! Each box is a copy of the image with its own TANDEM-CFG partition,
//! written with mtools as an operator's laptop would (no mount), and one
//! virtio NIC on a tap in the lab bridge. The test drives the boxes only
//! from a client namespace of the lab, as an operator would: ssh with a key,
//! and the `tandem` CLI against their admin API (HTTPS, the cluster CA, the
//! admin token read over ssh).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use tandem_tests::qemu::{
    boot_service_toml, build_initramfs, cloud_kernel, vm_tap, Firmware, Vm, OVMF_CODE, OVMF_VARS,
};
use tandem_tests::{describe_output, lab, phase, tandem_bin, wait_until, Lab, LabProcess};

/// The client namespace the operator's commands run in, and its address.
const OPERATOR: usize = 1;
const OPERATOR_CIDR: &str = "10.99.0.200/16";
/// The NIC's name inside a box: virtio-net at PCI slot 5 of QEMU's q35
/// root bus is `enp0s5` by systemd's naming scheme.
const BOX_NIC: &str = "enp0s5";
/// A box's disk: the image plus room for slot B and the data partition,
/// which the box makes on first boot.
const DISK_BYTES: u64 = 2 << 30;
/// From power-on to tandem answering, under TCG with several boxes at once.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Raft's timers times this (`cluster.timing_scale`): three emulated VMs
/// on two host cores run far slower than real boxes, and LAN timing (15 ms
/// heartbeats, 60–110 ms elections) turns into an election storm there.
const TIMING_SCALE: u64 = 20;
/// The PXE client of the fleet test.
const PXE_MAC: &str = "52:54:00:99:10:01";
const PXE_IP: &str = "10.99.4.2";

fn image() -> PathBuf {
    let p = PathBuf::from(
        std::env::var_os("TANDEM_IMAGE")
            .expect("TANDEM_IMAGE names the image to test: run `cargo xtask image-test`"),
    );
    assert!(p.exists(), "TANDEM_IMAGE {} does not exist", p.display());
    p
}

fn box_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, 0, 30 + u8::try_from(i).expect("a few boxes"))
}

fn box_mac(i: usize) -> String {
    format!("52:54:00:99:0a:{i:02x}")
}

/// The byte offset of the GPT partition labelled `label` in `disk`.
fn partition_offset(disk: &Path, label: &str) -> u64 {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(disk).expect("opening the disk");
    let mut hdr = [0u8; 92];
    f.seek(SeekFrom::Start(512)).expect("seek");
    f.read_exact(&mut hdr).expect("reading the GPT header");
    assert_eq!(&hdr[..8], b"EFI PART", "{} has no GPT", disk.display());
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
    let (lba, n, size) = (u64_at(&hdr, 72), u32_at(&hdr, 80), u32_at(&hdr, 84));
    f.seek(SeekFrom::Start(lba * 512)).expect("seek");
    let mut e = vec![0u8; size as usize];
    for _ in 0..n {
        f.read_exact(&mut e).expect("reading a GPT entry");
        let name: Vec<u16> = e[56..128]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&c| c != 0)
            .collect();
        if String::from_utf16_lossy(&name) == label {
            return u64_at(&e, 32) * 512;
        }
    }
    panic!("no partition {label} in {}", disk.display());
}

/// Writes `files` (path on the partition, content) onto TANDEM-CFG of
/// `disk` with mtools.
fn write_cfg(disk: &Path, files: &[(&str, String)], scratch: &Path) {
    let at = format!(
        "{}@@{}",
        disk.display(),
        partition_offset(disk, "TANDEM-CFG")
    );
    for (name, body) in files {
        let src = scratch.join(name.replace('/', "_"));
        std::fs::write(&src, body).expect("writing a config file");
        let out = std::process::Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-o", "-i", &at])
            .arg(&src)
            .arg(format!("::/{name}"))
            .output()
            .expect("running mcopy (mtools)");
        assert!(
            out.status.success(),
            "mcopy {name}: {}",
            describe_output(&out)
        );
    }
}

fn node_toml(i: usize) -> String {
    let ip = box_ip(i);
    format!(
        "node_id = {i}\ndata_dir = \"/var/lib/tandem\"\n\
         [cluster]\nlisten = \"{ip}:7480\"\ntiming_scale = {TIMING_SCALE}\n\
         [api]\nlisten = \"{ip}:7481\"\n\
         [service]\ninterface = \"{BOX_NIC}\"\nvip = \"{}\"\n",
        lab::VIP_CIDR
    )
}

fn network_file(i: usize) -> String {
    format!(
        "[Match]\nMACAddress={}\n\n[Network]\nAddress={}/{}\n",
        box_mac(i),
        box_ip(i),
        lab::PREFIX_LEN
    )
}

/// One appliance box: a VM booting its own copy of the image.
struct Appliance {
    i: usize,
    disk: PathBuf,
    process: Option<LabProcess>,
    serial: PathBuf,
    monitor: PathBuf,
}

impl Appliance {
    /// Copies the image to the box's disk (grown to [`DISK_BYTES`]) and
    /// writes its TANDEM-CFG: node.toml, authorized_keys, its .network,
    /// and `extra` files.
    fn prepare(t: &Fleet, i: usize, extra: &[(&str, String)]) -> Appliance {
        let disk = t.lab.root().join(format!("box{i}.img"));
        std::fs::copy(&t.image, &disk).expect("copying the image");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&disk)
            .and_then(|f| f.set_len(DISK_BYTES))
            .expect("growing the disk");
        let mut files = vec![
            ("node.toml", node_toml(i)),
            ("authorized_keys", t.pubkey.clone()),
            ("network/10-lab.network", network_file(i)),
        ];
        files.extend(extra.iter().cloned());
        write_cfg(&disk, &files, t.lab.root());
        Appliance {
            i,
            disk,
            process: None,
            serial: t.lab.root().join(format!("box{i}.serial.log")),
            monitor: t.lab.root().join(format!("box{i}.monitor.sock")),
        }
    }

    /// Powers the box on: q35 with OVMF (its own variable store), the disk
    /// on virtio, the NIC at slot 5 on tap `bxI`.
    fn power_on(&mut self, t: &Fleet) {
        let name = format!("box{}", self.i);
        let vars = t.lab.root().join(format!("{name}.OVMF_VARS.fd"));
        if !vars.exists() {
            std::fs::copy(OVMF_VARS, &vars).expect("copying OVMF_VARS (Debian ovmf)");
        }
        let args: Vec<String> = vec![
            "-accel".into(),
            "tcg".into(),
            "-machine".into(),
            "q35".into(),
            "-m".into(),
            "768".into(),
            "-nodefaults".into(),
            "-display".into(),
            "none".into(),
            "-vga".into(),
            "std".into(),
            "-serial".into(),
            format!("file:{}", self.serial.display()),
            "-monitor".into(),
            format!("unix:{},server=on,wait=off", self.monitor.display()),
            "-drive".into(),
            format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
            "-drive".into(),
            format!("if=pflash,format=raw,file={}", vars.display()),
            "-drive".into(),
            format!("file={},format=raw,if=virtio", self.disk.display()),
            "-netdev".into(),
            format!("tap,id=n0,ifname=bx{},script=no,downscript=no", self.i),
            "-device".into(),
            format!("virtio-net-pci,netdev=n0,addr=0x5,mac={}", box_mac(self.i)),
        ];
        let p = t
            .lab
            .spawn_in(
                &t.lab.switch_ns(),
                "qemu-system-x86_64",
                &args,
                &t.lab.root().join(format!("{name}.qemu.log")),
            )
            .expect("starting qemu-system-x86_64");
        self.process = Some(p);
    }

    /// Pulls the plug: QEMU ends at once, nothing is shut down in the box.
    fn power_off(&mut self) {
        if let Some(p) = self.process.take() {
            p.kill_and_wait();
        }
    }

    fn serial_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial).unwrap_or_default()).into_owned()
    }
}

/// The lab, the operator's ssh key and what the boxes are made from.
struct Fleet {
    lab: Lab,
    image: PathBuf,
    key: PathBuf,
    pubkey: String,
    _taps: Vec<LabProcess>,
}

impl Fleet {
    fn new(boxes: usize) -> Fleet {
        let lab = Lab::builder()
            .nodes(0)
            .client_with_ip(OPERATOR, OPERATOR_CIDR)
            .build()
            .expect("building the lab");
        let key = lab.root().join("operator_ed25519");
        let out = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "operator", "-f"])
            .arg(&key)
            .output()
            .expect("running ssh-keygen");
        assert!(
            out.status.success(),
            "ssh-keygen: {}",
            describe_output(&out)
        );
        let pubkey = std::fs::read_to_string(key.with_extension("pub")).expect("the public key");
        let taps = (1..=boxes)
            .map(|i| vm_tap(&lab, &format!("bx{i}")))
            .collect();
        Fleet {
            lab,
            image: image(),
            key,
            pubkey,
            _taps: taps,
        }
    }

    /// `ssh root@BOX CMD` with the operator's key, from the operator's namespace.
    fn ssh(&self, i: usize, cmd: &str) -> Output {
        let key = self.key.to_str().expect("UTF-8 path");
        let target = format!("root@{}", box_ip(i));
        self.lab
            .exec_in(
                &self.lab.client_ns(OPERATOR),
                "ssh",
                &[
                    "-i",
                    key,
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                    "-o",
                    "ConnectTimeout=5",
                    "-o",
                    "LogLevel=ERROR",
                    &target,
                    cmd,
                ],
                Duration::from_secs(60),
            )
            .unwrap_or_else(|e| panic!("ssh to box {i}: {e:#}"))
    }

    fn ssh_ok(&self, i: usize, cmd: &str) -> String {
        let out = self.ssh(i, cmd);
        assert!(
            out.status.success(),
            "ssh box {i} {cmd:?}: {}",
            describe_output(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until box `i` answers ssh and `tandem health` says it serves or
    /// follows; panics with its serial console after [`BOOT_TIMEOUT`].
    fn wait_healthy(&self, b: &Appliance) -> Duration {
        let t0 = Instant::now();
        let ok = wait_until(BOOT_TIMEOUT, || {
            self.ssh(b.i, "tandem --timeout 5s health").status.success()
        });
        assert!(
            ok,
            "box {} not healthy within {BOOT_TIMEOUT:?}; last ssh: {}\nserial console:\n{}",
            b.i,
            describe_output(&self.ssh(b.i, "tandem status; journalctl -b --no-pager | tail -n 60")),
            b.serial_text()
        );
        t0.elapsed()
    }

    fn status(&self, i: usize) -> Value {
        let s = self.ssh_ok(i, "tandem status --json");
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("status of box {i}: {e}: {s}"))
    }

    /// The operator's copies of the cluster CA and the admin token (read
    /// over ssh from box `i`), for the `tandem` CLI in their namespace.
    fn credentials(&self, i: usize) -> (PathBuf, PathBuf) {
        let ca = self.lab.root().join("cluster-ca.pem");
        let token = self.lab.root().join("admin.token");
        std::fs::write(&ca, self.ssh_ok(i, "cat /var/lib/tandem/tls/ca.pem")).expect("ca");
        std::fs::write(&token, self.ssh_ok(i, "cat /var/lib/tandem/admin.token")).expect("token");
        (ca, token)
    }

    /// `tandem ARGS` in the operator's namespace against box `i`'s API.
    fn tandem(&self, i: usize, creds: &(PathBuf, PathBuf), args: &[&str]) -> String {
        let api = format!("{}:{}", box_ip(i), lab::API_PORT);
        let mut all: Vec<&str> = vec![
            "--api",
            &api,
            "--ca",
            creds.0.to_str().expect("UTF-8"),
            "--token-file",
            creds.1.to_str().expect("UTF-8"),
            "--timeout",
            "60s",
        ];
        all.extend_from_slice(args);
        self.lab
            .exec_ok(
                &self.lab.client_ns(OPERATOR),
                tandem_bin(),
                &all,
                Duration::from_secs(120),
            )
            .unwrap_or_else(|e| panic!("tandem {args:?} via box {i}: {e:#}"))
    }

    fn vip_holders(&self, boxes: &[usize]) -> Vec<usize> {
        boxes
            .iter()
            .copied()
            .filter(|&i| self.status(i)["vip_held"].as_bool() == Some(true))
            .collect()
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        self.power_off();
    }
}

/// Three boxes flashed from one image form a cluster (the first creates it,
/// the other two join with a token written onto their TANDEM-CFG), exactly
/// one holds the VIP, and a fourth machine with no disk PXE-boots through
/// the VIP; the leader box loses power, the VIP moves, and a new PXE boot
/// succeeds. Along the way: ssh is key-only, and tty1 shows `tandem top`.
#[test]
fn three_boxes_form_a_cluster_that_pxe_boots_a_fourth_and_survives_losing_the_leader() {
    let fleet = Fleet::new(3);

    phase("box 1 boots the image with node.toml, authorized_keys and a .network on TANDEM-CFG");
    let mut b1 = Appliance::prepare(&fleet, 1, &[]);
    b1.power_on(&fleet);
    let took = fleet.wait_healthy(&b1);
    println!(
        "=== box 1: healthy (a cluster of one) {:.0} s after power-on",
        took.as_secs_f64()
    );

    phase("ssh is key-only: a password login is refused");
    let out = fleet
        .lab
        .exec_in(
            &fleet.lab.client_ns(OPERATOR),
            "ssh",
            &[
                "-o",
                "BatchMode=yes",
                "-o",
                "PubkeyAuthentication=no",
                "-o",
                "PreferredAuthentications=password,keyboard-interactive",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                &format!("root@{}", box_ip(1)),
                "true",
            ],
            Duration::from_secs(30),
        )
        .expect("ssh without a key");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Permission denied (publickey)"),
        "a login without the key was not refused as publickey-only: {}",
        describe_output(&out)
    );

    phase("boxes 2 and 3 get a join token on TANDEM-CFG and join");
    // A token is good for one join: one each.
    let join = || {
        let token = fleet
            .ssh_ok(1, "tandem cluster token --ttl 1h")
            .trim()
            .to_owned();
        assert!(!token.is_empty(), "no token printed");
        format!(
            "address = \"{}:{}\"\ntoken = \"{token}\"\n",
            box_ip(1),
            lab::API_PORT
        )
    };
    let mut b2 = Appliance::prepare(&fleet, 2, &[("join.toml", join())]);
    let mut b3 = Appliance::prepare(&fleet, 3, &[("join.toml", join())]);
    b2.power_on(&fleet);
    b3.power_on(&fleet);
    for b in [&b2, &b3] {
        let took = fleet.wait_healthy(b);
        println!(
            "=== box {}: healthy {:.0} s after power-on",
            b.i,
            took.as_secs_f64()
        );
    }
    let all = [1, 2, 3];
    let ok = wait_until(Duration::from_secs(120), || {
        fleet.status(1)["members"].as_array().map_or(0, Vec::len) == 3
    });
    assert!(ok, "box 1 does not list 3 members: {}", fleet.status(1));

    phase("the operator applies a boot config and puts the kernel and initramfs");
    let creds = fleet.credentials(1);
    let kernel = cloud_kernel();
    let initrd = build_initramfs(fleet.lab.root());
    let undionly = Path::new("/usr/lib/ipxe/undionly.kpxe");
    for (name, file) in [
        ("vmlinuz", kernel.as_path()),
        ("initrd.img", initrd.as_path()),
        ("undionly.kpxe", undionly),
    ] {
        fleet.tandem(
            1,
            &creds,
            &[
                "artifact",
                "put",
                file.to_str().expect("UTF-8"),
                "--name",
                name,
            ],
        );
    }
    let service = fleet.lab.root().join("service.toml");
    std::fs::write(
        &service,
        boot_service_toml(PXE_MAC, PXE_IP, "vmlinuz", "initrd.img"),
    )
    .expect("writing service.toml");
    fleet.tandem(1, &creds, &["apply", service.to_str().expect("UTF-8")]);

    phase("exactly one box holds the VIP");
    let ok = wait_until(Duration::from_secs(60), || {
        fleet.vip_holders(&all).len() == 1
    });
    let holders = fleet.vip_holders(&all);
    assert!(ok, "VIP holders: {holders:?}");
    let leader = holders[0];
    println!("=== box {leader} holds the VIP");

    phase("tty1 of the leader box shows tandem top with the nodes table");
    let ok = wait_until(Duration::from_secs(60), || {
        let screen = fleet.ssh_ok(leader, "cat /dev/vcs1 | tr -s ' '");
        screen.contains("Nodes") && screen.contains("ROLE") && screen.contains("leader")
    });
    assert!(
        ok,
        "tty1 does not show the nodes table:\n{}",
        fleet.ssh_ok(leader, "cat /dev/vcs1 | fold -w 100")
    );

    phase("a fourth machine, with no disk, PXE-boots through the VIP");
    let _pxe_tap = vm_tap(&fleet.lab, "pxe0");
    let vm = Vm::start(&fleet.lab, "pxe1", "pxe0", PXE_MAC, Firmware::BiosIpxeRom);
    let took = vm.wait_marker();
    println!(
        "=== PXE boot through the cluster: {:.1} s",
        took.as_secs_f64()
    );

    phase("the leader box loses power: the VIP moves, and a new PXE boot succeeds");
    let mut boxes = [b1, b2, b3];
    boxes[leader - 1].power_off();
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
    let t0 = Instant::now();
    let ok = wait_until(Duration::from_secs(60), || {
        fleet.vip_holders(&rest).len() == 1
    });
    assert!(
        ok,
        "no box took the VIP over: {:?}",
        fleet.vip_holders(&rest)
    );
    println!(
        "=== box {:?} holds the VIP (seen over ssh {:.1} s after power-off)",
        fleet.vip_holders(&rest),
        t0.elapsed().as_secs_f64()
    );
    let vm2 = Vm::start(&fleet.lab, "pxe2", "pxe0", PXE_MAC, Firmware::BiosIpxeRom);
    let took = vm2.wait_marker();
    println!(
        "=== PXE boot after the failover: {:.1} s",
        took.as_secs_f64()
    );
}

/// An upgrade bundle named by an environment variable (set by `cargo xtask
/// image-test`, which builds it).
fn bundle(var: &str) -> PathBuf {
    let p =
        PathBuf::from(std::env::var_os(var).unwrap_or_else(|| {
            panic!("{var} names an upgrade bundle: run `cargo xtask image-test`")
        }));
    assert!(p.exists(), "{var} {} does not exist", p.display());
    p
}

impl Fleet {
    /// Copies `file` to `dest` on box `i` (ssh, `cat >`: the box has no sftp).
    fn push(&self, i: usize, file: &Path, dest: &str) {
        let cmd = format!(
            "ssh -i {} -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
             -o LogLevel=ERROR root@{} 'cat > {dest}' < {}",
            self.key.display(),
            box_ip(i),
            file.display()
        );
        self.lab
            .exec_ok(
                &self.lab.client_ns(OPERATOR),
                "sh",
                &["-c", &cmd],
                Duration::from_secs(300),
            )
            .unwrap_or_else(|e| panic!("copying {} to box {i}: {e:#}", file.display()));
    }

    /// `IMAGE_VERSION` of the root box `i` runs now, once it answers ssh.
    fn running_version(&self, i: usize) -> Option<String> {
        let out = self.ssh(i, ". /usr/lib/os-release; echo $IMAGE_VERSION; tandem --timeout 5s health >/dev/null && echo healthy");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// `tandem image install` of a second build: the box writes slot B, reboots
/// into it, and is healthy again with the new version (its boot blessed).
/// Then a deliberately broken build (its daemon exits at start): the box
/// boots it, fails its health check, reboots on its own until the entry has
/// no tries left, and falls back to the good slot.
#[test]
fn a_box_upgrades_into_its_other_slot_and_falls_back_from_a_broken_build() {
    let fleet = Fleet::new(1);
    let good = bundle("TANDEM_IMAGE_UPDATE");
    let broken = bundle("TANDEM_IMAGE_BROKEN");

    phase("box 1 boots the image");
    let mut b1 = Appliance::prepare(&fleet, 1, &[]);
    b1.power_on(&fleet);
    fleet.wait_healthy(&b1);
    let v1 = fleet
        .ssh_ok(1, ". /usr/lib/os-release; echo $IMAGE_VERSION")
        .trim()
        .to_owned();
    let status = fleet.ssh_ok(1, "tandem image status");
    println!("=== before: {status}");
    assert!(status.contains("slot a"), "{status}");

    phase("install the second build: the box reboots into slot b");
    fleet.push(1, &good, "/var/tmp/next.update");
    let out = fleet.ssh(1, "tandem image install /var/tmp/next.update");
    println!("=== install: {}", describe_output(&out));
    let t0 = Instant::now();
    let ok = wait_until(BOOT_TIMEOUT, || {
        fleet
            .running_version(1)
            .is_some_and(|v| !v.starts_with(&format!("{v1}\n")) && v.contains("healthy"))
    });
    assert!(
        ok,
        "box 1 did not come back healthy with a new version:\n{}",
        b1.serial_text()
    );
    println!(
        "=== upgraded and healthy {:.0} s after the install",
        t0.elapsed().as_secs_f64()
    );
    let status = fleet.ssh_ok(1, "tandem image status");
    println!("=== after: {status}");
    assert!(status.contains("slot b"), "{status}");
    // systemd-bless-boot drops the counter once boot-complete.target is reached.
    let ok = wait_until(Duration::from_secs(120), || {
        let s = fleet.ssh_ok(1, "ls /efi/loader/entries");
        s.lines().any(|l| l.contains("-b.conf"))
    });
    assert!(ok, "the new entry was not blessed: {}", fleet.ssh_ok(1, "ls /efi/loader/entries; journalctl -b -u systemd-bless-boot -u tandem-healthy --no-pager"));
    let v2 = fleet
        .ssh_ok(1, ". /usr/lib/os-release; echo $IMAGE_VERSION")
        .trim()
        .to_owned();

    phase("install a broken build: it fails its boots and the box falls back to slot b on its own");
    fleet.push(1, &broken, "/var/tmp/broken.update");
    let out = fleet.ssh(1, "tandem image install /var/tmp/broken.update");
    println!("=== install: {}", describe_output(&out));
    let t0 = Instant::now();
    // First it must really boot the broken slot (its daemon fails) ...
    let ok = wait_until(BOOT_TIMEOUT, || {
        b1.serial_text().contains("deliberately broken build")
            || fleet
                .ssh(
                    1,
                    "journalctl -b -u tandem --no-pager | grep -q 'deliberately broken'",
                )
                .status
                .success()
    });
    println!(
        "=== broken build seen running: {ok} ({:.0} s)",
        t0.elapsed().as_secs_f64()
    );
    // ... then come back on the good one, healthy.
    let ok = wait_until(Duration::from_secs(1200), || {
        fleet
            .running_version(1)
            .is_some_and(|v| v.starts_with(&format!("{v2}\n")) && v.contains("healthy"))
            && fleet
                .ssh_ok(1, "cat /proc/cmdline")
                .contains("tandem.slot=b")
    });
    assert!(
        ok,
        "box 1 did not fall back to {v2} in slot b:\n{}",
        b1.serial_text()
    );
    println!(
        "=== fell back to {v2} in slot b {:.0} s after the broken install",
        t0.elapsed().as_secs_f64()
    );
    let entries = fleet.ssh_ok(1, "ls /efi/loader/entries");
    println!("=== entries: {entries}");
    assert!(
        entries.contains("+0-"),
        "the broken entry should have no tries left: {entries}"
    );
}
