#!/bin/sh
# mmdebstrap's customize hook for the appliance root (run by
# `cargo xtask image`): $1 is the root being built, $2 the image version,
# $3 the slot size in bytes, $4 "broken" for image-test's deliberately
# broken build (its daemon exits at start). Everything here edits files
# under $1 or runs a program chrooted into it; nothing touches the host.
set -eu
root=$1
version=$2
slot=$3
broken=${4:-}

# Kernel modules a headless boot server has no use for: sound, graphics,
# radios, cameras and TV, InfiniBand, and a few large file systems. The
# console stays on the firmware's frame buffer (efifb is built in).
kver=$(ls "$root/usr/lib/modules")
mods="$root/usr/lib/modules/$kver/kernel"
for d in sound drivers/gpu drivers/media drivers/net/wireless drivers/infiniband \
    drivers/bluetooth net/bluetooth net/wireless net/mac80211 drivers/staging \
    drivers/isdn drivers/iio drivers/input/touchscreen drivers/input/joystick \
    drivers/net/ethernet/mellanox/mlx5 drivers/net/can net/can \
    drivers/thunderbolt drivers/nfc net/nfc drivers/w1  \
    drivers/mtd drivers/md/bcache drivers/target drivers/scsi/lpfc drivers/scsi/qla2xxx \
    drivers/scsi/mpt3sas drivers/scsi/megaraid drivers/scsi/aacraid drivers/scsi/bfa \
    drivers/scsi/be2iscsi drivers/scsi/bnx2fc drivers/scsi/fcoe drivers/scsi/qedf \
    drivers/scsi/qedi drivers/scsi/pm8001 drivers/scsi/smartpqi drivers/scsi/hisi_sas \
    fs/btrfs fs/xfs fs/ocfs2 fs/gfs2 fs/nfs fs/nfsd fs/ceph fs/smb fs/cifs fs/ntfs3 \
    fs/f2fs fs/jfs fs/reiserfs fs/nilfs2 fs/ubifs fs/orangefs fs/afs net/ceph; do
    rm -rf "${mods:?}/$d"
done
chroot "$root" depmod -a "$kver"

# The writable parts: /var is the data partition (fstab), /etc/tandem and
# the ssh settings point into /run, filled each boot from TANDEM-CFG.
rm -rf "$root/etc/tandem"
ln -s /run/tandem-appliance/tandem "$root/etc/tandem"
mkdir -p "$root/boot/tandem-cfg" "$root/efi"
# Every box makes its own host key on first boot (onto /var), never shares
# the one made while building.
rm -f "$root"/etc/ssh/ssh_host_*
# An empty machine-id: systemd makes a transient one at each boot of the
# read-only root.
: >"$root/etc/machine-id"
# Not the build machine's name; tandem-config.service sets tandem-NODE_ID.
echo tandem >"$root/etc/hostname"
rm -f "$root/var/lib/dbus/machine-id"

cat >>"$root/usr/lib/os-release" <<EOF
IMAGE_ID=tandem
IMAGE_VERSION=$version
EOF
sed -i "s/@SLOT@/$slot/" "$root"/usr/lib/repart.d/*.conf

if [ "$broken" = broken ]; then
    # image-test's broken upgrade: a daemon that exits at start.
    cat >"$root/usr/bin/tandem.broken" <<'EOF'
#!/bin/sh
if [ "${1:-}" = daemon ]; then echo "tandem: deliberately broken build" >&2; exit 1; fi
exec /usr/bin/tandem.real "$@"
EOF
    mv "$root/usr/bin/tandem" "$root/usr/bin/tandem.real"
    mv "$root/usr/bin/tandem.broken" "$root/usr/bin/tandem"
    chmod 0755 "$root/usr/bin/tandem"
fi

chroot "$root" systemctl enable systemd-networkd.service tandem-config.service \
    tandem.service tandem-join.service tandem-apply.service tandem-healthy.service \
    tandem-console.service ssh.service
# tty1 belongs to tandem-console.service; its login prompt comes when the
# TUI ends.
rm -f "$root/etc/systemd/system/getty.target.wants/getty@tty1.service"
chroot "$root" systemctl mask systemd-networkd-wait-online.service

# The initrd for the UKI: with squashfs (conf.d/tandem.conf, modules).
chroot "$root" update-initramfs -u -k "$kver"

# Built, not shipped: apt's lists and caches, logs of the build.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/* "$root"/var/log/*
