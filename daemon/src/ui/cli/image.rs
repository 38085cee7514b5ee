//! `tandem image install FILE | status`: A/B upgrades of the appliance
//! (image/README.md). Runs on the box itself, as root.
//!
//! ```text
//!  FILE (ustar: manifest.json, root.squashfs, tandem.efi)
//!    root.squashfs ─▶ /dev/disk/by-partlabel/tandem-root-OTHER, sha256 checked
//!                     while writing and again read back from the partition
//!    tandem.efi    ─▶ ESP /EFI/tandem/tandem-VERSION.efi, sha256 checked
//!    entry         ─▶ ESP /loader/entries/tandem-VERSION-OTHER+2.conf
//!  then: hand leadership over if this node leads, and reboot
//! ```
//!
//! systemd-boot boots the newest entry first and counts its tries down
//! (`+2` → `+1-1` → `+0-2`); tandem-healthy.service holds boot-complete.target
//! until tandem serves or follows, and systemd-bless-boot then drops the
//! counter. An entry with no tries left sorts last, so the old slot, whose
//! entry stays, boots again on its own.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::output::{CliError, Done, Out};
use super::reach::{Kind, Reach};
use crate::api::dto::{HandoverDto, OkDto, StatusDto};

#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    /// Write an upgrade bundle (`tandem-VERSION-amd64.update`) into the
    /// inactive slot, verify it, hand leadership over and reboot into it.
    Install {
        file: PathBuf,
        /// Write and verify, but do not hand over or reboot.
        #[arg(long)]
        no_reboot: bool,
    },
    /// The running slot and version, and the boot entries on the ESP.
    Status,
}

/// Where systemd's gpt-auto-generator mounts the ESP (automount).
const ESP: &str = "/efi";
/// Tries a newly installed entry gets before it sorts last.
const TRIES: u32 = 2;
/// Larger than any manifest; the bundle is refused otherwise.
const MANIFEST_MAX: u64 = 64 << 10;
/// Larger than any UKI (kernel + initrd).
const UKI_MAX: u64 = 256 << 20;

#[derive(Debug, Deserialize)]
struct Manifest {
    format: u32,
    version: String,
    root: Part,
    uki: Part,
}

#[derive(Debug, Deserialize)]
struct Part {
    file: String,
    bytes: u64,
    sha256: String,
}

#[derive(Debug, Serialize)]
struct StatusOut {
    slot: String,
    version: String,
    entries: Vec<String>,
}

#[derive(Debug, Serialize)]
struct InstalledOut {
    version: String,
    slot: String,
    entry: String,
    rebooting: bool,
}

pub fn run(r: &Reach, out: Out, cmd: &ImageCmd) -> Done {
    match cmd {
        ImageCmd::Status => {
            let s = StatusOut {
                slot: current_slot()?.to_owned(),
                version: running_version(),
                entries: entries()?,
            };
            out.show(&s, |s| {
                println!("slot {}  version {}", s.slot, s.version);
                for e in &s.entries {
                    println!("entry {e}");
                }
            });
            Ok(())
        }
        ImageCmd::Install { file, no_reboot } => install(r, out, file, *no_reboot),
    }
}

fn failed(e: impl std::fmt::Display, hint: &str) -> CliError {
    CliError::failed(e.to_string(), Some(hint))
}

/// `a` or `b`, from `tandem.slot=` on the kernel command line.
fn current_slot() -> Result<&'static str, CliError> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").map_err(|e| {
        failed(
            format!("reading /proc/cmdline: {e}"),
            "run this on an appliance box",
        )
    })?;
    match cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("tandem.slot="))
    {
        Some("a") => Ok("a"),
        Some("b") => Ok("b"),
        _ => Err(failed(
            "this system was not booted from a tandem appliance slot (no tandem.slot= on the kernel command line)",
            "tandem image works only on a box flashed with the appliance image",
        )),
    }
}

fn running_version() -> String {
    std::fs::read_to_string("/usr/lib/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("IMAGE_VERSION="))
        .unwrap_or("unknown")
        .trim_matches('"')
        .to_owned()
}

fn entries_dir() -> PathBuf {
    Path::new(ESP).join("loader/entries")
}

fn entries() -> Result<Vec<String>, CliError> {
    let dir = entries_dir();
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| {
            failed(
                format!("reading {}: {e}", dir.display()),
                "is the ESP mounted at /efi?",
            )
        })?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("tandem-") && n.ends_with(".conf"))
        .collect();
    v.sort();
    Ok(v)
}

/// One ustar member header: its name and size. `None` at the end marker.
fn tar_header(f: &mut std::fs::File) -> Result<Option<(String, u64)>, CliError> {
    let mut h = [0u8; 512];
    f.read_exact(&mut h).map_err(|e| {
        failed(
            format!("reading the bundle: {e}"),
            "the file is cut short; download it again",
        )
    })?;
    if h.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    if &h[257..262] != b"ustar" {
        return Err(failed(
            "not an upgrade bundle (no ustar header)",
            "give the .update file that `cargo xtask image` wrote, not the .img",
        ));
    }
    let field = |r: std::ops::Range<usize>| {
        let b = &h[r];
        String::from_utf8_lossy(&b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())])
            .trim()
            .to_owned()
    };
    let name = field(0..100);
    let size = u64::from_str_radix(&field(124..136), 8).map_err(|_| {
        failed(
            "a bundle member has a bad size field",
            "download the bundle again",
        )
    })?;
    if h[156] != b'0' && h[156] != 0 {
        return Err(failed(
            format!("bundle member {name} is not a plain file"),
            "download the bundle again",
        ));
    }
    Ok(Some((name, size)))
}

/// Skips to the next 512-byte boundary after a member of `size` bytes.
fn tar_pad(f: &mut std::fs::File, size: u64) -> Result<(), CliError> {
    let pad = (512 - size % 512) % 512;
    f.seek(SeekFrom::Current(i64::try_from(pad).unwrap_or(0)))
        .map_err(|e| {
            failed(
                format!("reading the bundle: {e}"),
                "download the bundle again",
            )
        })?;
    Ok(())
}

/// Copies `len` bytes of `from` into `to`, hashing them; returns the hex sha256.
fn copy_hashed(from: &mut impl Read, to: &mut impl Write, len: u64) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        from.read_exact(&mut buf[..n])?;
        h.update(&buf[..n]);
        to.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The size of a block device, from sysfs.
fn device_bytes(dev: &Path) -> Result<u64, CliError> {
    let real = std::fs::canonicalize(dev).map_err(|e| {
        failed(
            format!("{}: {e}", dev.display()),
            "is this box's disk partitioned by the image (slot B is made on first boot)?",
        )
    })?;
    let name = real
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let sectors: u64 = std::fs::read_to_string(format!("/sys/class/block/{name}/size"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            failed(
                format!("no size for {}", real.display()),
                "check the partition table with `lsblk`",
            )
        })?;
    Ok(sectors * 512)
}

fn valid_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_~".contains(c))
}

#[allow(clippy::too_many_lines)]
fn install(r: &Reach, out: Out, file: &Path, no_reboot: bool) -> Done {
    let slot = current_slot()?;
    let target = if slot == "a" { "b" } else { "a" };
    let mut f = std::fs::File::open(file).map_err(|e| {
        failed(
            format!("{}: {e}", file.display()),
            "give the path of the .update file",
        )
    })?;

    // 1. The manifest comes first; nothing is written before it is read.
    let manifest: Manifest = match tar_header(&mut f)? {
        Some((name, size)) if name == "manifest.json" && size <= MANIFEST_MAX => {
            let mut b = vec![0u8; usize::try_from(size).unwrap_or(0)];
            f.read_exact(&mut b).map_err(|e| {
                failed(
                    format!("reading manifest.json: {e}"),
                    "download the bundle again",
                )
            })?;
            tar_pad(&mut f, size)?;
            serde_json::from_slice(&b)
                .map_err(|e| failed(format!("manifest.json: {e}"), "download the bundle again"))?
        }
        _ => {
            return Err(failed(
                "the bundle does not start with manifest.json",
                "give the .update file that `cargo xtask image` wrote",
            ))
        }
    };
    if manifest.format != 1 {
        return Err(failed(
            format!(
                "bundle format {} is newer than this tandem knows (1)",
                manifest.format
            ),
            "upgrade through an intermediate version",
        ));
    }
    if !valid_version(&manifest.version) {
        return Err(failed(
            format!("bad version {:?} in the manifest", manifest.version),
            "download the bundle again",
        ));
    }
    let dev = PathBuf::from(format!("/dev/disk/by-partlabel/tandem-root-{target}"));
    let slot_bytes = device_bytes(&dev)?;
    if manifest.root.bytes > slot_bytes {
        return Err(failed(
            format!(
                "the new root is {} bytes, slot {target} holds {slot_bytes}",
                manifest.root.bytes
            ),
            "this image does not fit the box's slots; reflash",
        ));
    }
    if manifest.uki.bytes > UKI_MAX {
        return Err(failed(
            "the UKI in the bundle is too large",
            "download the bundle again",
        ));
    }

    // 2. The root, into the inactive slot.
    eprintln!(
        "tandem: writing {} into slot {target} ({})",
        manifest.version,
        dev.display()
    );
    let (name, size) =
        tar_header(&mut f)?.ok_or_else(|| failed("the bundle ends early", "download it again"))?;
    if name != manifest.root.file || size != manifest.root.bytes {
        return Err(failed(
            format!("bundle member {name} ({size} bytes) is not the root the manifest names"),
            "download the bundle again",
        ));
    }
    let mut part = std::fs::OpenOptions::new()
        .write(true)
        .open(&dev)
        .map_err(|e| failed(format!("opening {}: {e}", dev.display()), "run as root"))?;
    let got = copy_hashed(&mut f, &mut part, size)
        .and_then(|h| part.sync_all().map(|()| h))
        .map_err(|e| {
            failed(
                format!("writing slot {target}: {e}"),
                &format!("check the disk (dmesg); slot {slot} is untouched and still boots"),
            )
        })?;
    drop(part);
    tar_pad(&mut f, size)?;
    if got != manifest.root.sha256 {
        return Err(failed(
            format!(
                "the root's sha256 is {got}, the manifest says {}",
                manifest.root.sha256
            ),
            "download the bundle again; the running slot is untouched and still boots",
        ));
    }
    // Read back what the disk holds, past any cache of what was written.
    let back = std::fs::File::open(&dev)
        .and_then(|mut p| {
            let _ = nix_fadvise_dontneed(&p);
            copy_hashed(&mut p, &mut std::io::sink(), size)
        })
        .map_err(|e| {
            failed(
                format!("reading slot {target} back: {e}"),
                "check the disk (dmesg)",
            )
        })?;
    if back != manifest.root.sha256 {
        return Err(failed(
            format!(
                "slot {target} reads back as {back}, not {}",
                manifest.root.sha256
            ),
            "the disk may be failing; check dmesg",
        ));
    }

    // 3. The UKI and the entry, on the ESP.
    let (name, size) =
        tar_header(&mut f)?.ok_or_else(|| failed("the bundle ends early", "download it again"))?;
    if name != manifest.uki.file || size != manifest.uki.bytes {
        return Err(failed(
            format!("bundle member {name} ({size} bytes) is not the UKI the manifest names"),
            "download the bundle again",
        ));
    }
    let esp_dir = Path::new(ESP).join("EFI/tandem");
    std::fs::create_dir_all(&esp_dir).map_err(|e| {
        failed(
            format!("{}: {e}", esp_dir.display()),
            "is the ESP mounted at /efi?",
        )
    })?;
    // Entries of the target slot name a root that is now gone: remove them
    // before the new one exists, so no entry ever boots a half-written slot.
    for e in entries()? {
        if e.contains(&format!("-{target}.conf")) || e.contains(&format!("-{target}+")) {
            let _ = std::fs::remove_file(entries_dir().join(&e));
        }
    }
    let uki_path = esp_dir.join(format!("tandem-{}.efi", manifest.version));
    let tmp = uki_path.with_extension("efi.tmp");
    let got = std::fs::File::create(&tmp)
        .and_then(|mut o| copy_hashed(&mut f, &mut o, size).and_then(|h| o.sync_all().map(|()| h)))
        .map_err(|e| {
            failed(
                format!("writing {}: {e}", tmp.display()),
                "is the ESP full? `tandem image status` lists entries",
            )
        })?;
    if got != manifest.uki.sha256 {
        let _ = std::fs::remove_file(&tmp);
        return Err(failed(
            format!(
                "the UKI's sha256 is {got}, the manifest says {}",
                manifest.uki.sha256
            ),
            "download the bundle again",
        ));
    }
    std::fs::rename(&tmp, &uki_path)
        .map_err(|e| failed(format!("{}: {e}", uki_path.display()), "check the ESP"))?;
    let options = std::fs::read_to_string("/proc/cmdline")
        .unwrap_or_default()
        .trim()
        .replace(
            &format!("tandem-root-{slot}"),
            &format!("tandem-root-{target}"),
        )
        .replace(
            &format!("tandem.slot={slot}"),
            &format!("tandem.slot={target}"),
        );
    let entry_name = format!("tandem-{}-{target}+{TRIES}.conf", manifest.version);
    let entry = format!(
        "title tandem {v} (slot {target})\nversion {v}\nsort-key tandem\nefi /EFI/tandem/tandem-{v}.efi\noptions {options}\n",
        v = manifest.version
    );
    let entry_path = entries_dir().join(&entry_name);
    std::fs::write(&entry_path, entry)
        .and_then(|()| std::fs::File::open(&entry_path).and_then(|e| e.sync_all()))
        .map_err(|e| failed(format!("{}: {e}", entry_path.display()), "check the ESP"))?;
    remove_unreferenced_ukis(&esp_dir);

    // 4. Leadership first, then the reboot.
    let mut rebooting = false;
    if !no_reboot {
        if let Ok(s) = r.read::<StatusDto>("/v1/status") {
            let voters = s.members.iter().filter(|m| m.role != "learner").count();
            if s.role == "leader" && voters > 1 {
                eprintln!("tandem: this node leads; handing leadership over before the reboot");
                let _: Result<OkDto, _> = r.call(Kind::Leader, |c| {
                    c.post("/v1/cluster/handover", &HandoverDto { to: None })
                });
            }
        }
        let st = std::process::Command::new("systemctl")
            .arg("reboot")
            .status();
        rebooting = st.is_ok_and(|s| s.success());
        if !rebooting {
            return Err(failed(
                "installed, but `systemctl reboot` failed",
                "reboot the box yourself",
            ));
        }
    }
    let o = InstalledOut {
        version: manifest.version,
        slot: target.to_owned(),
        entry: entry_name,
        rebooting,
    };
    out.show(&o, |o| {
        println!(
            "installed {} in slot {} (entry {}){}",
            o.version,
            o.slot,
            o.entry,
            if o.rebooting { "; rebooting" } else { "" }
        );
    });
    Ok(())
}

/// Drops the page cache of `f` so the read-back comes from the disk.
fn nix_fadvise_dontneed(f: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise only reads its integer arguments; the fd is
    // open for the duration of the call.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(rc))
    }
}

/// UKIs no entry names any more (their slot was overwritten).
fn remove_unreferenced_ukis(esp_dir: &Path) {
    let referenced: Vec<String> = std::fs::read_dir(entries_dir())
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect();
    for e in std::fs::read_dir(esp_dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".efi") && !referenced.iter().any(|t| t.contains(&name)) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
