//! `cargo xtask image [--version V] [--broken]`: the flashable appliance
//! image, `target/image/tandem-VERSION-amd64.img` and its `.img.zst`
//! (image/README.md says why these tools and what is where).
//!
//! ```text
//!  mmdebstrap --mode=unshare ─▶ root.tar ─▶ (tar -x) ─▶ mksquashfs ─▶ root.sqfs ─┐
//!    + image/rootfs, image/customize.sh   └─▶ vmlinuz, initrd ─▶ objcopy ─▶ UKI  │
//!  mkfs.vfat -C + mcopy: ESP (systemd-boot, UKI), TANDEM-CFG (examples) ──────────┤
//!  systemd-repart --empty=create, every partition CopyBlocks= ─▶ .img ─▶ zstd ◀───┘
//! ```
//!
//! No step needs a loop device or a mount on the build machine: mmdebstrap
//! works in its own user and mount namespace, the file systems are written
//! as files, and systemd-repart only copies their blocks into the GPT.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context, Result};

use crate::util::{require_root, run_cmd, workspace_root};

/// Debian packages the build machine needs for the image (not for tests).
pub const BUILD_PACKAGES: &[&str] = &[
    "mmdebstrap",
    "squashfs-tools",
    "dosfstools",
    "mtools",
    "binutils",
    "zstd",
    "systemd",
];

/// What the appliance root holds besides Debian's essential set.
const ROOT_PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "kmod",
    "linux-image-amd64",
    "initramfs-tools",
    "zstd",
    "openssh-server",
    "iproute2",
    "tcpdump",
    "iputils-ping",
    "procps",
    "dbus",
    "e2fsprogs",
    "mount",
    // Its EFI binaries are copied out into the ESP and the UKI; in the
    // root, systemd-bless-boot (boot counting) and bootctl.
    "systemd-boot",
];

/// Each root slot's size. Slot A in the image is exactly this big, slot B
/// is made on first boot with the same size: an upgrade's root must fit.
const SLOT_BYTES: u64 = 256 << 20;
const ESP_KIB: u64 = 96 * 1024;
const CFG_KIB: u64 = 16 * 1024;
const MIRROR: &str = "http://deb.debian.org/debian";

pub struct Opts {
    /// `IMAGE_VERSION` in os-release and the file name.
    pub version: Option<String>,
    /// image-test's deliberately broken build: its daemon exits at start.
    pub broken: bool,
}

/// Builds the image; returns the raw image's path.
pub fn build(opts: &Opts) -> Result<PathBuf> {
    require_root("cargo xtask image")?;
    crate::deps::apt(BUILD_PACKAGES)?;
    let started = Instant::now();
    let bin = crate::util::build_tandem()?;
    let version = match &opts.version {
        Some(v) => v.clone(),
        None => default_version()?,
    };
    ensure!(
        !version.is_empty()
            && version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_~".contains(c)),
        "--version {version:?}: use letters, digits and . - _ ~ only (it goes into a file name and os-release)"
    );
    let out_dir = crate::util::target_dir().join("image");
    let work = out_dir.join(format!("work-{version}"));
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)?;
    let root = workspace_root();
    let image_src = root.join("image");

    // 1. The root as a tarball, customized, with /boot copied out.
    let t = Instant::now();
    let tar = work.join("root.tar");
    let boot = work.join("boot");
    let staging = work.join("staging");
    stage_files(&bin, &root, &staging)?;
    let mut mm = Command::new("mmdebstrap");
    mm.args(["--mode=unshare", "--variant=essential", "--quiet"])
        .arg(format!("--include={}", ROOT_PACKAGES.join(",")));
    for p in [
        "path-exclude=/usr/share/man/*",
        "path-exclude=/usr/share/doc/*",
        "path-exclude=/usr/share/locale/*",
        "path-exclude=/usr/share/info/*",
        "path-include=/usr/share/locale/locale.alias",
    ] {
        mm.arg(format!("--dpkgopt={p}"));
    }
    mm.arg(format!(
        "--customize-hook=sync-in {} /",
        image_src.join("rootfs").display()
    ))
    .arg(format!("--customize-hook=sync-in {} /", staging.display()))
    .arg(format!(
        "--customize-hook=sh {} \"$1\" {version} {SLOT_BYTES} {}",
        image_src.join("customize.sh").display(),
        if opts.broken { "broken" } else { "" }
    ))
    .arg(format!("--customize-hook=sync-out /boot {}", boot.display()))
    .arg(format!(
        "--customize-hook=sync-out /usr/lib/systemd/boot/efi {}",
        work.join("efi").display()
    ))
    // The kernel and initrd live in the UKI on the ESP, not in the root.
    .arg("--customize-hook=rm -f \"$1\"/boot/vmlinuz-* \"$1\"/boot/initrd.img-* \"$1\"/vmlinuz* \"$1\"/initrd.img*")
    .args(["bookworm"])
    .arg(&tar)
    .arg(MIRROR);
    run_cmd(&mut mm, "mmdebstrap")?;
    let t_debootstrap = t.elapsed();

    // 2. The read-only root.
    let t = Instant::now();
    let tree = work.join("tree");
    std::fs::create_dir_all(&tree)?;
    run_cmd(
        Command::new("tar")
            .args([
                "-x",
                "--numeric-owner",
                "--xattrs",
                "--xattrs-include=*",
                "-f",
            ])
            .arg(&tar)
            .arg("-C")
            .arg(&tree),
        "tar -x root.tar",
    )?;
    let sqfs = work.join("root.sqfs");
    run_cmd(
        Command::new("mksquashfs").arg(&tree).arg(&sqfs).args([
            "-comp",
            "zstd",
            "-Xcompression-level",
            "15",
            "-b",
            "1M",
            "-noappend",
            "-quiet",
            "-no-progress",
        ]),
        "mksquashfs",
    )?;
    std::fs::remove_dir_all(&tree)?;
    std::fs::remove_file(&tar)?;
    let sqfs_len = std::fs::metadata(&sqfs)?.len();
    ensure!(
        sqfs_len <= SLOT_BYTES,
        "the root squashfs is {} MiB, more than a {} MiB slot: drop packages or modules (image/customize.sh)",
        sqfs_len >> 20,
        SLOT_BYTES >> 20
    );
    let t_squash = t.elapsed();

    // 3. The UKI for slot A, the ESP and the config partition.
    let t = Instant::now();
    let uki = work.join("tandem.efi");
    make_uki(&work, &boot, &uki, &version)?;
    let esp = work.join("esp.img");
    make_esp(&work, &esp, &uki, &version)?;
    let cfg = work.join("cfg.img");
    make_cfg(&image_src, &cfg)?;

    // 4. The GPT: every partition copied in as blocks.
    let defs = work.join("repart.d");
    write_repart_defs(&defs, &esp, &cfg, &sqfs)?;
    std::fs::create_dir_all(&out_dir)?;
    let img = out_dir.join(format!("tandem-{version}-amd64.img"));
    let _ = std::fs::remove_file(&img);
    run_cmd(
        Command::new("systemd-repart")
            .args(["--empty=create", "--size=auto", "--dry-run=no", "--seed"])
            .arg(seed(&version))
            .arg(format!("--definitions={}", defs.display()))
            .arg(&img),
        "systemd-repart",
    )?;
    let zst = img.with_extension("img.zst");
    run_cmd(
        Command::new("zstd")
            .args(["-q", "-f", "-T0", "-10"])
            .arg(&img)
            .arg("-o")
            .arg(&zst),
        "zstd",
    )?;
    let update = write_update(&work, &out_dir, &version, &sqfs, &uki)?;
    let t_assemble = t.elapsed();
    std::fs::remove_dir_all(&work.join("staging"))?;

    let mib = |p: &Path| std::fs::metadata(p).map(|m| m.len() as f64 / f64::from(1 << 20));
    println!(
        "=== image {}: {:.1} MiB raw, {:.1} MiB zstd (root squashfs {:.1} MiB, UKI {:.1} MiB); \
         {:.0} s in all: mmdebstrap {:.0} s, squashfs {:.0} s, ESP/UKI/GPT/zstd {:.0} s\n\
         === upgrade bundle for `tandem image install`: {}",
        img.display(),
        mib(&img)?,
        mib(&zst)?,
        mib(&sqfs)?,
        mib(&uki)?,
        started.elapsed().as_secs_f64(),
        t_debootstrap.as_secs_f64(),
        t_squash.as_secs_f64(),
        t_assemble.as_secs_f64(),
        update.display(),
    );
    Ok(img)
}

/// `cargo xtask image-test`: the test deps, the image, then tests/image
/// (`--features image-test`) against it, one test at a time.
pub fn test(harness_args: &[String]) -> Result<()> {
    require_root("cargo xtask image-test")?;
    crate::deps::run()?;
    // Three builds: the image the boxes are flashed with, a later version
    // to upgrade to, and a broken one (its daemon exits at start) that must
    // roll back. Later versions sort higher, as systemd-boot wants.
    let base = default_version()?;
    let img = build(&Opts {
        version: Some(base.clone()),
        broken: false,
    })?;
    let out_dir = crate::util::target_dir().join("image");
    let update = |v: &str| out_dir.join(format!("tandem-{v}-amd64.update"));
    let next = format!("{base}.1");
    build(&Opts {
        version: Some(next.clone()),
        broken: false,
    })?;
    let bad = format!("{base}.2-broken");
    build(&Opts {
        version: Some(bad.clone()),
        broken: true,
    })?;
    let bin = crate::util::target_dir().join("release").join("tandem");
    println!(
        "=== cargo test -p tandem-tests --test image (TANDEM_IMAGE={})",
        img.display()
    );
    run_cmd(
        crate::util::cargo()
            .args([
                "test",
                "--release",
                "-p",
                "tandem-tests",
                "--features",
                "image-test",
                "--test",
                "image",
                "--",
                "--nocapture",
                "--test-threads=1",
            ])
            .args(harness_args)
            .env("TANDEM_IMAGE", &img)
            .env("TANDEM_IMAGE_UPDATE", update(&next))
            .env("TANDEM_IMAGE_BROKEN", update(&bad))
            .env("TANDEM_BIN", &bin),
        "the image tests",
    )
}

/// The upgrade bundle `tandem image install` takes: a plain tar (ustar) of
/// `manifest.json` (first), the root squashfs and the UKI; the manifest
/// holds their sizes and sha256, which the install checks.
fn write_update(
    work: &Path,
    out_dir: &Path,
    version: &str,
    sqfs: &Path,
    uki: &Path,
) -> Result<PathBuf> {
    let sha = |p: &Path| -> Result<String> {
        let out = Command::new("sha256sum")
            .arg(p)
            .output()
            .context("sha256sum")?;
        ensure!(out.status.success(), "sha256sum {} failed", p.display());
        Ok(String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned())
    };
    let manifest = serde_json::json!({
        "format": 1,
        "version": version,
        "root": {"file": "root.squashfs", "bytes": std::fs::metadata(sqfs)?.len(), "sha256": sha(sqfs)?},
        "uki": {"file": "tandem.efi", "bytes": std::fs::metadata(uki)?.len(), "sha256": sha(uki)?},
    });
    std::fs::write(
        work.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest)?,
    )?;
    std::fs::rename(sqfs, work.join("root.squashfs"))?;
    let out = out_dir.join(format!("tandem-{version}-amd64.update"));
    run_cmd(
        Command::new("tar")
            .args(["--format=ustar", "--owner=0", "--group=0", "-cf"])
            .arg(&out)
            .arg("-C")
            .arg(work)
            .args(["manifest.json", "root.squashfs", "tandem.efi"]),
        "tar (upgrade bundle)",
    )?;
    std::fs::rename(work.join("root.squashfs"), sqfs)?;
    Ok(out)
}

/// `<crate version>.<commits>-g<commit>`: the commit count makes later
/// builds sort higher, which is how systemd-boot picks the newest entry.
fn default_version() -> Result<String> {
    let git = |args: &[&str]| -> Result<String> {
        let out = Command::new("git")
            .args(args)
            .current_dir(workspace_root())
            .output()
            .with_context(|| format!("git {}", args.join(" ")))?;
        ensure!(out.status.success(), "git {} failed", args.join(" "));
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let count = git(&["rev-list", "--count", "HEAD"])?;
    let hash = git(&["rev-parse", "--short=10", "HEAD"])?;
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"])?.is_empty();
    Ok(format!(
        "{}.{count}-g{hash}{}",
        env!("CARGO_PKG_VERSION"),
        if dirty { "-dirty" } else { "" }
    ))
}

/// Files from the repository that go into the root as they are: the binary,
/// its unit and journald drop-in (deploy/systemd).
fn stage_files(bin: &Path, root: &Path, staging: &Path) -> Result<()> {
    let copy = |from: &Path, to: &str, mode: u32| -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dest = staging.join(to);
        std::fs::create_dir_all(dest.parent().expect("a file has a parent"))?;
        std::fs::copy(from, &dest)
            .with_context(|| format!("copying {} to {}", from.display(), dest.display()))?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    // Stripped: the release build keeps debug info (150 MB), which a box
    // does not need; a backtrace still names functions.
    let dest = staging.join("usr/bin/tandem");
    std::fs::create_dir_all(dest.parent().expect("a file has a parent"))?;
    run_cmd(
        Command::new("objcopy")
            .arg("--strip-debug")
            .arg(bin)
            .arg(&dest),
        "objcopy --strip-debug tandem",
    )?;
    let systemd = root.join("deploy/systemd");
    copy(
        &systemd.join("tandem.service"),
        "etc/systemd/system/tandem.service",
        0o644,
    )?;
    copy(
        &systemd.join("journald.conf.d/tandem.conf"),
        "etc/systemd/journald.conf.d/tandem.conf",
        0o644,
    )?;
    Ok(())
}

/// A unified kernel image: systemd's EFI stub with the kernel, initrd and
/// os-release as PE sections (systemd 252 has no ukify). It has no
/// `.cmdline`: the stub then takes the boot entry's `options`, which name
/// the slot's root, so one UKI serves either slot.
fn make_uki(work: &Path, boot: &Path, out: &Path, version: &str) -> Result<()> {
    let find = |prefix: &str| -> Result<PathBuf> {
        let mut found = std::fs::read_dir(boot)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .collect::<Vec<_>>();
        found.sort();
        found
            .pop()
            .with_context(|| format!("no {prefix}* in {}", boot.display()))
    };
    let kernel = find("vmlinuz-")?;
    let initrd = find("initrd.img-")?;
    let osrel = work.join("os-release");
    std::fs::write(
        &osrel,
        format!(
            "PRETTY_NAME=\"tandem {version}\"\nID=tandem\nIMAGE_ID=tandem\nIMAGE_VERSION={version}\nVERSION_ID={version}\n"
        ),
    )?;
    let stub = work.join("efi/linuxx64.efi.stub");
    // Section addresses past the stub's own; the kernel at 32 MiB, the
    // initrd after it.
    let kernel_len = std::fs::metadata(&kernel)?.len();
    let initrd_vma = 0x300_0000u64.max((0x200_0000 + kernel_len + 0xf_ffff) & !0xf_ffff);
    let mut cmd = Command::new("objcopy");
    cmd.arg("--add-section")
        .arg(format!(".osrel={}", osrel.display()))
        .args(["--change-section-vma", ".osrel=0x20000"])
        .arg("--add-section")
        .arg(format!(".linux={}", kernel.display()))
        .args(["--change-section-vma", ".linux=0x2000000"])
        .arg("--add-section")
        .arg(format!(".initrd={}", initrd.display()))
        .arg("--change-section-vma")
        .arg(format!(".initrd={initrd_vma:#x}"))
        .arg(&stub)
        .arg(out);
    run_cmd(&mut cmd, "objcopy (UKI)")
}

/// A boot loader entry (Boot Loader Specification type #1) for `slot`: the
/// UKI of `version` with the slot's root on its command line. `tandem image
/// install` writes the same for the other slot, with `+N` tries (boot
/// counting) in its file name.
fn boot_entry(version: &str, slot: &str) -> String {
    format!(
        "title tandem {version} (slot {slot})\nversion {version}\nsort-key tandem\n\
         efi /EFI/tandem/tandem-{version}.efi\n\
         options root=PARTLABEL=tandem-root-{slot} rootfstype=squashfs ro tandem.slot={slot} \
         console=tty1 console=ttyS0,115200n8 quiet\n"
    )
}

fn mtools(args: &[&str], img: &Path, what: &str) -> Result<()> {
    let mut cmd = Command::new(args[0]);
    cmd.arg("-i").arg(img).args(&args[1..]);
    cmd.env("MTOOLS_SKIP_CHECK", "1");
    run_cmd(&mut cmd, what)
}

/// The ESP: systemd-boot at the removable-media path (no NVRAM entry is
/// needed) and slot A's UKI, made as a file with mkfs.vfat and mtools.
fn make_esp(work: &Path, esp: &Path, uki: &Path, version: &str) -> Result<()> {
    run_cmd(
        Command::new("mkfs.vfat")
            .args(["-C", "-F", "32", "-n", "ESP"])
            .arg(esp)
            .arg(ESP_KIB.to_string()),
        "mkfs.vfat (ESP)",
    )?;
    for d in [
        "::/EFI",
        "::/EFI/BOOT",
        "::/EFI/systemd",
        "::/EFI/tandem",
        "::/loader",
        "::/loader/entries",
    ] {
        mtools(&["mmd", d], esp, "mmd")?;
    }
    let boot = work.join("efi/systemd-bootx64.efi");
    let b = boot.to_str().context("non-UTF-8 path")?;
    mtools(&["mcopy", b, "::/EFI/BOOT/BOOTX64.EFI"], esp, "mcopy")?;
    mtools(
        &["mcopy", b, "::/EFI/systemd/systemd-bootx64.efi"],
        esp,
        "mcopy",
    )?;
    // Not under /EFI/Linux, where systemd-boot would list it a second
    // time, as an entry of its own with no root on its command line.
    let u = uki.to_str().context("non-UTF-8 path")?;
    let dest = format!("::/EFI/tandem/tandem-{version}.efi");
    mtools(&["mcopy", u, &dest], esp, "mcopy")?;
    let entry = work.join("entry-a.conf");
    std::fs::write(&entry, boot_entry(version, "a"))?;
    let e = entry.to_str().context("non-UTF-8 path")?;
    let dest = format!("::/loader/entries/tandem-{version}-a.conf");
    mtools(&["mcopy", e, &dest], esp, "mcopy")?;
    // No menu unless a key is held: the box boots unattended.
    let loader = work.join("loader.conf");
    std::fs::write(&loader, "timeout 0\nconsole-mode keep\neditor no\n")?;
    let l = loader.to_str().context("non-UTF-8 path")?;
    mtools(&["mcopy", l, "::/loader/loader.conf"], esp, "mcopy")
}

/// TANDEM-CFG: FAT, so any laptop can write it; it starts with a README and
/// examples only (no node.toml: an unconfigured box serves nothing).
fn make_cfg(image_src: &Path, cfg: &Path) -> Result<()> {
    run_cmd(
        Command::new("mkfs.vfat")
            .args(["-C", "-n", "TANDEM-CFG"])
            .arg(cfg)
            .arg(CFG_KIB.to_string()),
        "mkfs.vfat (TANDEM-CFG)",
    )?;
    let src = image_src.join("cfg");
    mtools(&["mmd", "::/network"], cfg, "mmd")?;
    for e in std::fs::read_dir(&src).with_context(|| format!("reading {}", src.display()))? {
        let p = e?.path();
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .context("file name")?;
        let dest = if name.ends_with(".network.example") {
            format!("::/network/{name}")
        } else {
            format!("::/{name}")
        };
        mtools(
            &["mcopy", p.to_str().context("non-UTF-8 path")?, &dest],
            cfg,
            "mcopy",
        )?;
    }
    Ok(())
}

/// The build's partition table: ESP, TANDEM-CFG, root slot A. Slot B and
/// the data partition come on first boot (/usr/lib/repart.d in the root).
fn write_repart_defs(defs: &Path, esp: &Path, cfg: &Path, sqfs: &Path) -> Result<()> {
    std::fs::create_dir_all(defs)?;
    let part = |name: &str, body: String| std::fs::write(defs.join(name), body);
    part(
        "10-esp.conf",
        format!(
            "[Partition]\nType=esp\nLabel=ESP\nCopyBlocks={}\n",
            esp.display()
        ),
    )?;
    // Microsoft basic data: the type laptops mount as a plain FAT volume.
    part(
        "20-cfg.conf",
        format!(
            "[Partition]\nType=ebd0a0a2-b9e5-4433-87c0-68b6b72699c7\nLabel=TANDEM-CFG\nCopyBlocks={}\n",
            cfg.display()
        ),
    )?;
    let mut root = String::new();
    writeln!(root, "[Partition]\nType=root-x86-64\nLabel=tandem-root-a")?;
    writeln!(root, "CopyBlocks={}", sqfs.display())?;
    writeln!(root, "SizeMinBytes={SLOT_BYTES}\nSizeMaxBytes={SLOT_BYTES}")?;
    part("30-root-a.conf", root)?;
    Ok(())
}

/// A fixed seed per version: the same version gets the same partition UUIDs.
fn seed(version: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    version.hash(&mut h);
    let a = h.finish();
    "tandem".hash(&mut h);
    let b = h.finish();
    let x = (u128::from(a) << 64) | u128::from(b);
    let s = format!("{x:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &s[0..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..32]
    )
}
