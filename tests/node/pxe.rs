//! Real PXE boots: a QEMU VM (TCG, QEMU's iPXE NIC ROM from `ipxe-qemu`,
//! `-boot n`) on a tap in the lab bridge gets DHCP from the VIP, chains the
//! script rendered for its reservation over HTTP (`/boot/MAC.ipxe`), loads
//! the Debian cloud kernel and a busybox initramfs over HTTP, and boots;
//! its /init prints a marker on the serial console and powers off.
//!
//! The VM's IPv6 router solicitation is answered on its tap with a router
//! advertisement of lifetime 0 (`tests/scripts/ra_zero.py`), or iPXE would
//! wait ~15 s for IPv6 autoconfiguration (TOOLCHAIN.md). The advertisement
//! must be unicast to the VM at both layers (or multicast at both): iPXE
//! drops an `ff02::1` packet in a frame addressed to its own MAC, which cost
//! every boot here 16 s (21–24 s a boot; 5–6 s once answered right). The
//! test checks the answer took: iPXE's "Configuring" wait stays short.
//!
//! The UEFI HTTP boot row is driven by dhclient posing as one (vendor class
//! `HTTPClient`, option 93 = 16): it must get the binary's URL and option 60
//! echoed.

use std::time::Duration;

use tandem_tests::clients::{dhclient_with, udhcpc_lease};
use tandem_tests::metrics::counter;
use tandem_tests::qemu::{
    boot_service_toml, build_initramfs, cloud_kernel, put_artifacts, vm_tap, Firmware, Vm,
};
use tandem_tests::{apply, lab, phase, start_lab, wait_single_server, Lab};

/// The VM's NIC: its reservation names the profile with the kernel.
const VM_MAC: &str = "52:54:00:99:00:01";
const VM_IP: &str = "10.99.4.1";

fn service_toml() -> String {
    boot_service_toml(VM_MAC, VM_IP, "vmlinuz", "initrd.img")
}

/// Waits until node 1 leads its cluster of one (it serves only once a
/// service config is applied).
fn wait_leader(lab: &Lab) {
    assert!(
        tandem_tests::wait_until(Duration::from_secs(20), || tandem_tests::is_leader(lab, 1)),
        "node 1 never led"
    );
}

/// iPXE prints a dot for every second it waits in "Configuring (net0
/// MAC)...": ~16 when no router advertisement ends its IPv6
/// autoconfiguration, 2–3 when one does.
fn ipxe_configure_seconds(serial: &str) -> usize {
    let Some(at) = serial.find("Configuring (") else {
        panic!("no \"Configuring\" line on the serial console:\n{serial}");
    };
    let rest = &serial[at..];
    let after = &rest[rest.find(')').map_or(0, |i| i + 1)..];
    after.chars().take_while(|&c| c == '.').count()
}

#[test]
fn ipxe_vm_boots_kernel_and_initrd_over_http_from_the_vip() {
    phase("lab up: one node serving; kernel and busybox initramfs as artifacts");
    let lab = start_lab(1, 0);
    wait_leader(&lab);
    let kernel = cloud_kernel();
    let initrd = build_initramfs(lab.root());
    put_artifacts(&lab, 1, &[("vmlinuz", &kernel), ("initrd.img", &initrd)]);
    apply(&lab, 1, &service_toml());
    assert_eq!(wait_single_server(&lab, Duration::from_secs(20)), 1);
    let ok_before = counter(&lab, 1, "tandem_http_requests_total", &[("code", "200")]);

    phase("VM: PXE (QEMU iPXE ROM) -> DHCP -> /boot/MAC.ipxe -> kernel + initrd over HTTP");
    let _ra = vm_tap(&lab, "vm0");
    let vm = Vm::start(&lab, "vm", "vm0", VM_MAC, Firmware::BiosIpxeRom);
    let took = vm.wait_marker();
    println!(
        "=== clean PXE boot: {:.1} s from VM start to the marker",
        took.as_secs_f64()
    );

    phase("the serial log shows the chain, and the server counted the fetches");
    let log = vm.serial_text();
    let ra = std::fs::read_to_string(lab.root().join("ra_zero.vm0.log")).unwrap_or_default();
    println!(
        "=== RA answerer: {} router solicitations answered",
        ra.matches("answered RS").count()
    );
    println!("=== serial console:\n{log}");
    assert!(
        ra.contains(&format!("answered RS from {VM_MAC}")),
        "the VM's router solicitation went unanswered:\n{ra}"
    );
    let dots = ipxe_configure_seconds(&log);
    assert!(
        dots < 8,
        "iPXE spent ~{dots} s configuring: it did not take the router advertisement"
    );
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

/// The iPXE builds of the Debian `ipxe` package.
const IPXE_EFI: &str = "/usr/lib/ipxe/ipxe.efi";
const UNDIONLY: &str = "/usr/lib/ipxe/undionly.kpxe";

/// One node serving `service`, with the kernel, a busybox initramfs and a
/// first-stage boot program (`name`, from `path`) put as artifacts; returns
/// the lab and its TFTP-ok and HTTP-200 counters before the boot.
fn lab_with_first_stage(name: &str, path: &str, service: &str) -> (Lab, f64, f64) {
    phase(&format!(
        "lab up: one node serving; kernel, initramfs and {name} (Debian ipxe) as artifacts"
    ));
    let lab = start_lab(1, 0);
    wait_leader(&lab);
    let kernel = cloud_kernel();
    let initrd = build_initramfs(lab.root());
    put_artifacts(
        &lab,
        1,
        &[
            ("vmlinuz", &kernel),
            ("initrd.img", &initrd),
            (name, std::path::Path::new(path)),
        ],
    );
    apply(&lab, 1, service);
    assert_eq!(wait_single_server(&lab, Duration::from_secs(20)), 1);
    let tftp = counter(&lab, 1, "tandem_tftp_transfers_total", &[("result", "ok")]);
    let http = counter(&lab, 1, "tandem_http_requests_total", &[("code", "200")]);
    (lab, tftp, http)
}

/// The UEFI chain in real firmware: OVMF with no NIC ROM PXE-boots with its
/// own client (arch 7, no user-class), gets `ipxe.efi` from the VIP by
/// TFTP, and that iPXE (user-class iPXE now) chains the rendered script over
/// HTTP and boots the kernel through its EFI stub.
#[test]
fn ovmf_pxe_chains_ipxe_efi_by_tftp_then_the_script_over_http() {
    let (lab, tftp_before, http_before) = lab_with_first_stage(
        "ipxe.efi",
        IPXE_EFI,
        &service_toml().replace("bios = \"undionly.kpxe\"", "uefi_x64 = \"ipxe.efi\""),
    );

    phase(
        "VM: OVMF PXE (arch 7) -> ipxe.efi by TFTP -> /boot/MAC.ipxe -> kernel + initrd over HTTP",
    );
    let _ra = vm_tap(&lab, "vm0");
    let vm = Vm::start(&lab, "uefi", "vm0", VM_MAC, Firmware::OvmfNoRom);
    let took = vm.wait_marker();
    println!(
        "=== UEFI PXE boot (OVMF -> ipxe.efi -> script): {:.1} s from VM start to the marker",
        took.as_secs_f64()
    );
    let log = vm.serial_text();
    println!("=== serial console:\n{log}");

    phase("ipxe.efi came by TFTP, the script, kernel and initrd by HTTP");
    // OVMF's own PXE client prints what the DHCP reply named.
    assert!(
        log.contains("NBP filename is ipxe.efi"),
        "OVMF's PXE client was not handed ipxe.efi:\n{log}"
    );
    let tftp = counter(&lab, 1, "tandem_tftp_transfers_total", &[("result", "ok")]);
    assert!(
        tftp > tftp_before,
        "no TFTP transfer: OVMF did not fetch ipxe.efi ({tftp_before} -> {tftp})"
    );
    let script = format!("http://{}/boot/{VM_MAC}.ipxe", lab::VIP);
    assert!(log.contains(&script), "iPXE did not fetch {script}:\n{log}");
    let ok = counter(&lab, 1, "tandem_http_requests_total", &[("code", "200")]);
    assert!(ok >= http_before + 3.0, "200s went {http_before} -> {ok}");
}

/// The BIOS row, by plain clients: udhcpc sends what a BIOS PXE ROM sends
/// (vendor class `PXEClient:Arch:00000:UNDI:002001`, option 93 = 0, no
/// user-class) and must get `undionly.kpxe` with the VIP as next server;
/// then tftp-hpa fetches it from that next server, and the bytes are those
/// put. (The VM runs the same chain below; this one checks the bytes.)
#[test]
fn a_bios_pxe_client_gets_undionly_by_tftp_from_the_next_server() {
    phase("lab up: one node serving; undionly.kpxe (Debian ipxe) as an artifact");
    let lab = start_lab(1, 1);
    wait_leader(&lab);
    put_artifacts(
        &lab,
        1,
        &[("undionly.kpxe", std::path::Path::new(UNDIONLY))],
    );
    apply(&lab, 1, &service_toml());
    assert_eq!(wait_single_server(&lab, Duration::from_secs(20)), 1);

    phase("udhcpc as a BIOS PXE ROM: vendor class PXEClient arch 0, option 93 = 0");
    let l = udhcpc_lease(
        &lab,
        1,
        &["-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000"],
        Duration::from_secs(30),
    )
    .expect("udhcpc lease");
    assert_eq!(
        l.lease.boot_file.as_deref(),
        Some("undionly.kpxe"),
        "{:?}",
        l.vars
    );
    assert_eq!(l.lease.siaddr, Some(lab::VIP), "next server: {:?}", l.vars);

    phase("tftp-hpa fetches the boot file from the next server, byte for byte");
    // The lab's udhcpc script put the leased address on the client.
    let dest = lab.root().join("undionly.fetched");
    let next = lab::VIP.to_string();
    let cmd = format!("get undionly.kpxe {}", dest.display());
    lab.exec_ok(
        &lab.client_ns(1),
        "tftp",
        &[
            "-m",
            "binary",
            &next,
            "-c",
            "get",
            "undionly.kpxe",
            dest.to_str().expect("UTF-8"),
        ],
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("tftp {next} -c {cmd}: {e:#}"));
    assert_eq!(
        tandem_tests::lab::sha256_file(&dest).expect("sha256 of the fetched file"),
        tandem_tests::lab::sha256_file(std::path::Path::new(UNDIONLY)).expect("sha256"),
        "tftp-hpa got other bytes than were put"
    );
}

/// The BIOS chain in a VM, first stage `undionly.kpxe` by TFTP. The VM is
/// real BIOS (`SeaBIOS`) whose PXE stack is QEMU's iPXE NIC ROM, which would
/// send user-class iPXE and get the script. At its "Press Ctrl-B" prompt the
/// test presses Ctrl-B through QEMU's monitor (`sendkey`) and types
/// `set user-class PXEClient` and `autoboot` at the ROM's shell: the ROM's
/// user-class setting replaces its built-in "iPXE", so it DHCPs as a plain
/// BIOS PXE ROM (vendor class `PXEClient` arch 0, no user-class iPXE). Those
/// keystrokes are the only thing not a real BIOS boot. tandem hands it
/// `undionly.kpxe`, the ROM fetches that by TFTP and runs it as a PXE NBP
/// through the PXE API it installs; undionly's own iPXE then DHCPs with
/// user-class iPXE, chains the script over HTTP and boots the kernel.
///
/// Why the first undionly chains `undionly.kpxe` once more (two TFTP
/// transfers, every run), so that the test asks for "at least one": the
/// test's own `set user-class PXEClient` leaks into it. iPXE's PXE API hands
/// an NBP a DHCPACK it builds from its settings (`create_fakedhcpack` merges
/// the global settings, where the shell's `set` lands), undionly registers
/// that packet as its `net0.dhcp` (cachedhcp), and its DHCP request takes
/// `user-class` from the settings, so it asks as `PXEClient` and tandem
/// rightly answers `undionly.kpxe`. The second undionly's cached DHCPACK is
/// built from tandem's real ACK, which carries no option 77, so it asks as
/// `iPXE` and gets the script. A capture on the lab bridge (tcpdump on
/// `br0`, cut short by the lab's teardown) shows the first part: the ROM's
/// DHCP and the first undionly's (a new xid, after the TFTP transfer) both
/// carry user-class `PXEClient`, and tandem's replies carry no option 77.
/// The rest is read from iPXE's source. Not a profile-selection bug.
#[test]
fn bios_vm_chains_undionly_by_tftp_then_the_script_over_http() {
    let (lab, tftp_before, http_before) =
        lab_with_first_stage("undionly.kpxe", UNDIONLY, &service_toml());

    phase("VM: SeaBIOS + iPXE ROM; Ctrl-B, set user-class PXEClient, autoboot");
    let _ra = vm_tap(&lab, "vm0");
    let vm = Vm::start(&lab, "bios", "vm0", VM_MAC, Firmware::BiosIpxeRom);
    let prompt = Duration::from_secs(60);
    assert!(
        tandem_tests::wait_until(prompt, || vm.serial_text().contains("Ctrl-B")),
        "no Ctrl-B prompt from the ROM within {prompt:?}:\n{}",
        vm.serial_text()
    );
    vm.sendkey(&["ctrl-b"]);
    assert!(
        tandem_tests::wait_until(Duration::from_secs(20), || vm
            .serial_text()
            .contains("iPXE>")),
        "Ctrl-B did not open the ROM's shell:\n{}",
        vm.serial_text()
    );
    vm.type_line("set user-class PXEClient");
    vm.type_line("autoboot");
    let took = vm.wait_marker();
    println!(
        "=== BIOS PXE boot (ROM -> undionly.kpxe by TFTP -> script): {:.1} s from VM start to the marker",
        took.as_secs_f64()
    );
    let log = vm.serial_text();
    println!("=== serial console:\n{log}");

    phase("undionly.kpxe came by TFTP and ran; the script, kernel and initrd by HTTP");
    let tftp = counter(&lab, 1, "tandem_tftp_transfers_total", &[("result", "ok")]);
    println!(
        "=== TFTP transfers: {}, undionly.kpxe fetches on serial: {}",
        tftp - tftp_before,
        log.matches("/undionly.kpxe... ok").count()
    );
    assert!(
        tftp > tftp_before,
        "no TFTP transfer: the ROM did not fetch undionly.kpxe ({tftp_before} -> {tftp})"
    );
    let nbp = format!("tftp://{}/undionly.kpxe", lab::VIP);
    assert!(log.contains(&nbp), "the ROM did not fetch {nbp}:\n{log}");
    // The ROM's banner, then undionly's own.
    let banners = log.matches("Open Source Network Boot Firmware").count();
    assert!(
        banners >= 2,
        "{banners} iPXE banner(s): undionly.kpxe did not start:\n{log}"
    );
    let script = format!("http://{}/boot/{VM_MAC}.ipxe", lab::VIP);
    let at = log.find(&nbp).expect("checked above");
    assert!(
        log[at..].contains(&script),
        "undionly did not fetch {script} after the TFTP stage:\n{log}"
    );
    let ok = counter(&lab, 1, "tandem_http_requests_total", &[("code", "200")]);
    assert!(ok >= http_before + 3.0, "200s went {http_before} -> {ok}");
}
