#!/usr/bin/env bash
# `make packages`: one Debian package per role, plus floor-agent-common, into dist/.
#
#   floor-agent-common       /usr/bin/floor-agent (picks the installed role's tree), /etc/floor-agent
#   floor-agent-workstation  usb_guard + netlock; floor-agent.service (root); Conflicts: usbguard
#   floor-agent-door         access; floor-door.service (user floor-door)
#   floor-agent-cctv         the recorder; floor-cctv.service (user floor-cctv)
#   floor-agent-collector    collector + dashboard + store; floor-collector.service,
#                            floor-backup.timer (user floor-collector)
#   floor-agent-retention    retention sweep; floor-retention.timer (user floor-retention)
#
# Each role package holds this project's wheel and ONLY its extra's Python dependencies
# (`pip install --target`, no venv) in /usr/lib/floor-agent/<role>/lib, run by
# /usr/lib/floor-agent/<role>/bin/floor-agent (python3 -I: no user site, no PYTHONPATH). The units
# from systemd/ run that path. Built with dpkg-deb from `git archive HEAD` (a clean checkout,
# never the work tree's uncommitted files), offline except pip's index (pip's cache answers
# what it has), with SOURCE_DATE_EPOCH = the commit's time: the same commit and the same
# pip cache give byte-identical .debs.
#
# Needs: dpkg-deb, git, and a CPython 3.11 with pip (the extension modules are cp311, as Debian
# 12's python3 is): $PYTHON, default .venv/bin/python (`make bootstrap`, which also installs the
# build dependencies of the sdists, e.g. libpcsclite-dev for pyscard).
# Environment: DEB_REVISION (default 1) makes the version <project version>-<revision>;
# ROLES (default all five) builds a subset; DIST (default dist/) is the output directory and
# DEB_WORK (default build/debs/, emptied first) the staging one, relative to the checkout, e.g.
# for a second revision built beside dist/ (vmtests/test_packages.py upgrades to one);
# DEB_COMPRESS (default xz) is dpkg-deb's -Z: xz takes minutes on the cctv and collector trees,
# `none` no time (that test's throwaway revision).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
ROLES=${ROLES:-workstation door cctv collector retention}
DEB_REVISION=${DEB_REVISION:-1}
DEB_COMPRESS=${DEB_COMPRESS:-xz}
OUT=$(realpath -m "${DIST:-$ROOT/dist}")
WORK=$(realpath -m "${DEB_WORK:-$ROOT/build/debs}")

"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' || {
  echo "build-debs: $PYTHON must be CPython 3.11 (Debian 12's python3)" >&2; exit 1; }
COMMIT=$(git rev-parse HEAD)
export SOURCE_DATE_EPOCH
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct HEAD)
ARCH=$(dpkg --print-architecture)
umask 022
export LC_ALL=C.UTF-8 TZ=UTC PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONHASHSEED=0

rm -rf "$WORK"
mkdir -p "$WORK/src" "$WORK/wheel" "$OUT"
git archive --format=tar HEAD | tar -x -C "$WORK/src"
UPSTREAM=$("$PYTHON" -c 'import tomllib,sys; print(tomllib.load(open(sys.argv[1],"rb"))["project"]["version"])' \
  "$WORK/src/pyproject.toml")
VERSION=$UPSTREAM-$DEB_REVISION
echo "build-debs: floor-agent $VERSION from commit $COMMIT ($ARCH)"
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/wheel" "$WORK/src"
WHEEL=$(ls "$WORK"/wheel/floor_agent-*.whl)
# Every file of the package that is not Python (templates, static files) must be in the wheel:
# an editable install finds them in the checkout, a package only if package-data names them.
missing=$(comm -23 <(cd "$WORK/src" && find floor_agent -type f ! -name '*.py' | sort) \
  <("$PYTHON" -c 'import sys, zipfile; print("\n".join(zipfile.ZipFile(sys.argv[1]).namelist()))' \
    "$WHEEL" | sort))
if [ -n "$missing" ]; then
  echo "build-debs: not in the wheel (pyproject.toml package-data): $missing" >&2; exit 1
fi

# role -> units (from systemd/), units to enable, system user, extra groups, state dirs,
# conffiles (from config/), Debian run-time dependencies.
declare -A UNITS ENABLE USERS SUPPL STATE KEEPS ADVICE CONF DEPS
UNITS[workstation]="floor-agent.service";          ENABLE[workstation]="floor-agent.service"
UNITS[door]="floor-door.service";                  ENABLE[door]="floor-door.service"
UNITS[cctv]="floor-cctv.service";                  ENABLE[cctv]="floor-cctv.service"
UNITS[collector]="floor-collector.service floor-backup.service floor-backup.timer"
ENABLE[collector]="floor-collector.service floor-backup.timer"
UNITS[retention]="floor-retention.service floor-retention.timer"
ENABLE[retention]="floor-retention.timer"
USERS[workstation]=root  # the sysfs `authorized` files are root's (see floor-agent.service)
USERS[door]=floor-door;  USERS[cctv]=floor-cctv
USERS[collector]=floor-collector;  USERS[retention]=floor-retention
SUPPL[door]=dialout  # the fingerprint module's and OSDP bus's serial ports (door enroll too)
SUPPL[cctv]=video    # USB cameras
STATE[workstation]=workstation;  STATE[door]=door;  STATE[cctv]=cctv
STATE[collector]="collector backups";  STATE[retention]=retention
# What purge leaves in the role's state directory (postrm says so).
KEEPS[workstation]="the agent key and the audit spool"
KEEPS[door]="the agent key, the audit spool and the credentials cache"
KEEPS[cctv]="the agent key, the audit spool and the footage"
KEEPS[collector]="the CA, the anchor key and the audit store"  # backups: postrm
KEEPS[retention]="the agent key, the audit spool and the sweeps' resume notes"
# ... and what to do before removing it by hand.
ADVICE[workstation]="make sure the collector has every event"
ADVICE[door]=${ADVICE[workstation]};  ADVICE[retention]=${ADVICE[workstation]}
ADVICE[cctv]="make sure the collector has every event and the footage its second copy"
ADVICE[collector]="it is the floor's audit record: keep a verified backup off this host"
ADVICE[collector]+=" (floor-agent collector backup)"
CONF[workstation]="workstation.yaml usb-rules.conf"
CONF[door]=door.yaml;  CONF[cctv]=cctv.yaml;  CONF[collector]=collector.yaml
CONF[retention]=retention.yaml
# nftables: netlock loads its ruleset with nft; libudev1 + udev: pyudev (ctypes) and hot-plug.
DEPS[workstation]="nftables, udev, libudev1"
# pcscd: the PC/SC readers; libpcsclite1: pyscard's extension links it.
DEPS[door]="pcscd, libpcsclite1"
# PyAV and OpenCV wheels carry their FFmpeg and codecs.
DEPS[cctv]=""
# WeasyPrint (report tom) renders with Pango and needs a font.
DEPS[collector]="libpango-1.0-0, libpangoft2-1.0-0, fonts-dejavu-core"
DEPS[retention]=""
COMMON_DEPS="python3 (>= 3.11), python3 (<< 3.12), adduser, init-system-helpers (>= 1.54), floor-agent-common (= $VERSION)"

finish() {  # finish <package> <root>: normalise the tree, then dpkg-deb it into dist/
  local pkg=$1 root=$2
  find "$root" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +
  chmod -R go-w "$root"
  dpkg-deb --root-owner-group -Z"$DEB_COMPRESS" --build "$root" "$OUT/${pkg}_${VERSION}_$(
    sed -n 's/^Architecture: //p' "$root/DEBIAN/control").deb" >/dev/null
}

doc() {  # doc <package> <root>
  install -d "$2/usr/share/doc/$1"
  printf 'floor-agent %s (commit %s)\nLicense: proprietary (LicenseRef-Proprietary).\n' \
    "$VERSION" "$COMMIT" > "$2/usr/share/doc/$1/copyright"
}

rm -f "$OUT"/floor-agent-common_*.deb
for role in $ROLES; do rm -f "$OUT/floor-agent-${role}"_*.deb; done

# floor-agent-common: the shared /usr/bin/floor-agent and /etc/floor-agent.
R=$WORK/floor-agent-common
install -d "$R/DEBIAN" "$R/usr/bin" "$R/etc/floor-agent"
install -m 0755 packaging/floor-agent.sh "$R/usr/bin/floor-agent"
doc floor-agent-common "$R"
install -m 0644 "$WORK/src/README.md" "$R/usr/share/doc/floor-agent-common/README.md"
cat > "$R/DEBIAN/control" <<EOF
Package: floor-agent-common
Version: $VERSION
Architecture: all
Maintainer: floor-agent maintainers <root@localhost>
Section: admin
Priority: optional
Depends: python3 (>= 3.11)
Description: floor-agent security suite: the floor-agent command
 /usr/bin/floor-agent runs the command in the installed role package's tree
 (floor-agent-workstation, -door, -cctv, -collector or -retention): the role
 the command names, else the one its --config file is named after, else the
 first installed.
EOF
finish floor-agent-common "$R"

for role in $ROLES; do
  pkg=floor-agent-$role
  R=$WORK/$pkg
  lib=$R/usr/lib/floor-agent/$role/lib
  install -d "$R/DEBIAN" "$lib" "$R/usr/lib/floor-agent/$role/bin" "$R/lib/systemd/system" \
    "$R/etc/floor-agent"
  "$PYTHON" -m pip install --quiet --no-compile --no-warn-script-location --target "$lib" \
    "$WHEEL[$role]"
  # pip's console scripts carry the build host's interpreter path; direct_url.json the wheel's.
  rm -rf "$lib/bin"
  find "$lib" -name direct_url.json -delete
  if grep -rlI --exclude=RECORD -e "$ROOT" -e "$(dirname "$PYTHON")" "$lib" | grep .; then
    echo "build-debs: $pkg: the files above name build-host paths" >&2; exit 1
  fi
  sed "s/@ROLE@/$role/g" packaging/role-entry.py > "$R/usr/lib/floor-agent/$role/bin/floor-agent"
  chmod 0755 "$R/usr/lib/floor-agent/$role/bin/floor-agent"
  for unit in ${UNITS[$role]}; do
    sed -e "s#/opt/floor-agent/venv/bin/floor-agent#/usr/lib/floor-agent/$role/bin/floor-agent#" \
        -e "s#file:///opt/floor-agent/README.md#file:///usr/share/doc/floor-agent-common/README.md#" \
        "$WORK/src/systemd/$unit" > "$R/lib/systemd/system/$unit"
    chmod 0644 "$R/lib/systemd/system/$unit"
  done
  : > "$R/DEBIAN/conffiles"
  for f in ${CONF[$role]}; do
    install -m 0644 "$WORK/src/config/$f" "$R/etc/floor-agent/$f"
    echo "/etc/floor-agent/$f" >> "$R/DEBIAN/conffiles"
  done
  if [ "$role" = workstation ]; then
    # The boot lock: usbcore (a module in Debian's kernel, loaded from the initramfs) starts
    # with authorized_default=0, so a stick in its port at power-on is never a disk before the
    # agent judges it. postinst rebuilds the initramfs; vmtests/test_boot_lock.py proves it.
    install -D -m 0644 packaging/floor-agent-usb-lock.conf \
      "$R/etc/modprobe.d/floor-agent-usb-lock.conf"
    echo "/etc/modprobe.d/floor-agent-usb-lock.conf" >> "$R/DEBIAN/conffiles"
  fi
  if [ "$role" = cctv ]; then
    # videodev at boot: the unit's DeviceAllow=char-video4linux needs the class in
    # /proc/devices when it starts (the file says why; postinst loads it at install).
    install -D -m 0644 packaging/floor-agent-cctv-modules.conf \
      "$R/usr/lib/modules-load.d/floor-agent-cctv.conf"
  fi
  doc "$pkg" "$R"
  deps="$COMMON_DEPS${DEPS[$role]:+, ${DEPS[$role]}}"
  extra=""
  if [ "$role" = workstation ]; then
    # One USB authority on the machine: Debian's usbguard daemon would judge the same devices
    # by its own rules (and its own authorized_default); dpkg enforces one or the other.
    extra="Conflicts: usbguard
"
  fi
  if [ "$role" = collector ]; then  # pg_dump, for `collector backup` of a PostgreSQL store
    extra="Suggests: postgresql-client
"
  fi
  size=$(du -sk --apparent-size "$R" | cut -f1)
  cat > "$R/DEBIAN/control" <<EOF
Package: $pkg
Version: $VERSION
Architecture: $ARCH
Maintainer: floor-agent maintainers <root@localhost>
Section: admin
Priority: optional
Installed-Size: $size
Depends: $deps
${extra}Description: floor-agent security suite: the $role role
 The $role role of floor-agent with its own Python dependencies only, in
 /usr/lib/floor-agent/$role, its systemd units, /etc/floor-agent/ config
 (conffiles) and state in /var/lib/floor-agent/ (0700). Built from commit
 $COMMIT.
EOF
  for script in postinst prerm postrm; do
    sed -e "s/@ROLE@/$role/g" -e "s/@PACKAGE@/$pkg/g" -e "s/@USER@/${USERS[$role]}/g" \
        -e "s/@GROUPS@/${SUPPL[$role]:-}/g" -e "s/@STATE@/${STATE[$role]}/g" \
        -e "s/@UNITS@/${UNITS[$role]}/g" -e "s/@ENABLE@/${ENABLE[$role]}/g" -e "s/@KEEPS@/${KEEPS[$role]}/g" \
        -e "s/@ADVICE@/${ADVICE[$role]}/g" \
        "packaging/maintscript/$script" > "$R/DEBIAN/$script"
    chmod 0755 "$R/DEBIAN/$script"
  done
  finish "$pkg" "$R"
done
ls -l "$OUT"/floor-agent-*.deb
