#!/bin/bash
# The VM's base root file system: Debian 12 from Debian packages only (mmdebstrap), with the
# mirror taken from this host's own apt sources (no URL written down anywhere).
# Usage: build-base.sh OUTDIR   (root). Writes OUTDIR/rootfs; vmtests/image.py caches OUTDIR by
# a hash of this file, so changing the package list below rebuilds it.
set -euo pipefail
OUT=$1
[ "$(id -u)" = 0 ] || { echo "build-base.sh: must run as root (mmdebstrap --mode=root)" >&2; exit 1; }

# Host tools, from Debian, only if missing.
if ! command -v qemu-system-x86_64 >/dev/null || ! command -v mmdebstrap >/dev/null \
   || ! command -v mkfs.ext4 >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    qemu-system-x86 qemu-utils mmdebstrap e2fsprogs
fi

# The host's bookworm sources (deb822 first, then the classic list).
SRC=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] && grep -qi '^Suites:.*bookworm' "$f" && { SRC=$f; break; }
done
[ -n "$SRC" ] || { [ -s /etc/apt/sources.list ] && SRC=/etc/apt/sources.list; }
[ -n "$SRC" ] || { echo "build-base.sh: no bookworm apt source on this host" >&2; exit 1; }

PACKAGES=systemd-sysv,udev,kmod,linux-image-amd64,initramfs-tools,python3,python3-venv,nftables,usbutils,procps,iproute2,usbguard,ca-certificates
# The collector package's Debian dependencies (WeasyPrint's Pango, its font): the guest has no
# package index, so apt installs dist/floor-agent-collector_*.deb from these.
PACKAGES=$PACKAGES,libpango-1.0-0,libpangoft2-1.0-0,fonts-dejavu-core

rm -rf "$OUT/rootfs"
mkdir -p "$OUT"
nice -n 10 mmdebstrap --mode=root --variant=minbase --include="$PACKAGES" \
  --aptopt='Acquire::Check-Valid-Until "false"' bookworm "$OUT/rootfs" "$SRC"

R=$OUT/rootfs
echo floor-vm > "$R/etc/hostname"
printf '/dev/vda / ext4 rw 0 1\n' > "$R/etc/fstab"
chroot "$R" passwd -d root
# One USB authority on the machine: Debian's usbguard stays off unless a test is about it.
chroot "$R" systemctl disable usbguard.service usbguard-dbus.service || true
chroot "$R" systemctl mask usbguard.service usbguard-dbus.service
# Nothing periodic that would compete for the emulated CPU.
chroot "$R" systemctl disable apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
  e2scrub_all.timer fstrim.timer 2>/dev/null || true
# The guest's only NIC (virtio, QEMU user networking): static, the host is 10.0.2.2.
mkdir -p "$R/etc/systemd/network"
cat > "$R/etc/systemd/network/10-qemu.network" <<'NET'
[Match]
Driver=virtio_net

[Network]
Address=10.0.2.15/24
LinkLocalAddressing=no
IPv6AcceptRA=no
NET
chroot "$R" systemctl enable systemd-networkd.service
echo "10.0.2.2 collector.vm" >> "$R/etc/hosts"
touch "$OUT/done"
