#!/usr/bin/env bash
# `make fresh-root`: the README's two commands on a Debian 12 root file system that never ran
# anything, as a new admin meets them (issue 18: `make test` once failed on a fresh machine).
#
#   1. mmdebstrap a Debian 12 minbase (no python3, no udev, no /run/udev: nothing of ours) plus
#      `make`, from the host's own bookworm apt source;
#   2. a clean clone of HEAD into /root/floor inside it (committed files only);
#   3. chroot with /proc, /sys, /dev and a private /run and /dev/shm; `make demo` for DEMO_SECONDS
#      (it must come up, play its whole script and stop cleanly on Ctrl-C, leaving a collector
#      store whose chain verifies and that holds what the script promises), then `make test`.
#
# As root on Debian 12; needs network to the apt mirror and PyPI (as `make test` does). Takes
# as long as the suite plus the Debian packages' download (about 40 minutes on 2 cores). The
# root is removed at the end (KEEP=1 keeps it for a look). Not part of CI: `.ci/run` runs the
# same commands on the CI machine.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
DEMO_SECONDS=${DEMO_SECONDS:-150}
[ "$(id -u)" = 0 ] || { echo "fresh-root: must run as root" >&2; exit 1; }
command -v mmdebstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y \
  --no-install-recommends mmdebstrap >/dev/null

SRC=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] && grep -qi '^Suites:.*bookworm' "$f" && { SRC=$f; break; }
done
[ -n "$SRC" ] || { [ -s /etc/apt/sources.list ] && SRC=/etc/apt/sources.list; }
[ -n "$SRC" ] || { echo "fresh-root: no bookworm apt source on this host" >&2; exit 1; }

WORK=$(mktemp -d /var/tmp/floor-fresh-root.XXXXXX)
R=$WORK/rootfs
cleanup() {
  # Whatever still runs inside the root (a service a test left) goes before its mounts do.
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$R" ] && kill -9 "${p#/proc/}" 2>/dev/null || true
  done
  sleep 1
  for m in $(awk -v r="$R" '$2 == r || index($2, r "/") == 1 {print $2}' /proc/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  if [ "${KEEP:-0}" = 1 ]; then
    echo "fresh-root: kept $WORK"
  elif ! awk -v r="$R" 'index($2, r) == 1 {found=1} END {exit !found}' /proc/mounts; then
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

log() { echo "[fresh-root $(date -u +%H:%M:%S)] $*"; }
log "mmdebstrap bookworm minbase + make into $R"
nice -n 5 mmdebstrap --mode=root --variant=minbase --include=make \
  --aptopt='Acquire::Check-Valid-Until "false"' bookworm "$R" "$SRC" >/dev/null
cp /etc/resolv.conf "$R/etc/resolv.conf"
# The site's network, not our state: a host whose HTTPS goes through an inspecting proxy trusts
# its CA (/usr/local/share/ca-certificates, picked up when bootstrap installs ca-certificates)
# and may point pip at the system bundle (/etc/pip.conf); a machine on that network needs both.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$R/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$R/usr/local/share/ca-certificates/"
fi
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$R/etc/pip.conf"
git clone -q "$REPO" "$R/root/floor"
log "clean clone of $(git -C "$R/root/floor" rev-parse --short HEAD) in /root/floor"

# A machine's / is a mount point (`ip netns exec` remounts it rslave): bind the root onto itself.
mount --bind "$R" "$R"
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
mount --rbind /dev "$R/dev" && mount --make-rslave "$R/dev"
mount -t tmpfs -o mode=1777 tmpfs "$R/dev/shm"
mount -t tmpfs -o mode=0755 tmpfs "$R/run"
[ -d /sys/fs/cgroup ] && mount --rbind /sys/fs/cgroup "$R/sys/fs/cgroup" || true
test ! -e "$R/run/udev"   # what a machine where udev never ran looks like

in_root() {
  chroot "$R" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    /bin/bash -c "cd /root/floor && $1"
}

log "make demo for ${DEMO_SECONDS} s, then Ctrl-C"
# setsid: the SIGINT goes to the demo's process group, as a terminal's Ctrl-C does.
in_root "exec setsid make demo" > "$WORK/demo.log" 2>&1 &
demo=$!
deadline=$((SECONDS + 1800))   # the first run installs every Debian package first
until grep -q "floor-agent demo is running" "$WORK/demo.log"; do
  if ! kill -0 "$demo" 2>/dev/null || [ $SECONDS -gt $deadline ]; then
    tail -50 "$WORK/demo.log"; echo "fresh-root: make demo did not come up" >&2; exit 1
  fi
  sleep 2
done
log "demo up (bootstrap included: $SECONDS s so far)"
sleep "$DEMO_SECONDS"
make_pid=""
for p in $(pgrep -x make); do
  [ "$(readlink "/proc/$p/root")" = "$R" ] && make_pid=$p
done
[ -n "$make_pid" ] || { echo "fresh-root: no make process in the root" >&2; exit 1; }
kill -INT -- "-$(ps -o pgid= -p "$make_pid" | tr -d ' ')"
wait "$demo" || true
tail -5 "$WORK/demo.log"
grep -q "demo stopped; data kept in" "$WORK/demo.log" \
  || { echo "fresh-root: make demo did not stop cleanly" >&2; exit 1; }
if grep -E "exited with|Traceback" "$WORK/demo.log"; then
  echo "fresh-root: the demo failed (above)" >&2; exit 1
fi
work=$(sed -n 's/^demo stopped; data kept in //p' "$WORK/demo.log")
# The store holds what the demo's script promises, and its chains verify.
in_root ".venv/bin/floor-agent collector verify --config $work/collector.yaml"
in_root ".venv/bin/python - $work/collector.yaml" <<'PY'
import sys
from floor_agent.collector.config import CollectorConfig
from floor_agent.config import load_role
from floor_agent.store import open_store
from floor_agent.store.interface import EventQuery

config = load_role(sys.argv[1], CollectorConfig)
store = open_store(config.collector.resolved_database_url())
want = ["usb.blocked", "net.breach", "net.recovered", "door.granted", "door.clone_suspected",
        "cctv.segment", "cctv.tamper"]
missing = [kind for kind in want if not store.query_events(EventQuery(kind=kind, limit=1)).events]
store.close()
print("demo events at the collector:", "all of " + ", ".join(want) if not missing else missing)
sys.exit(1 if missing else 0)
PY
log "make test"
in_root "make test" 2>&1 | tee "$WORK/test.log" | tail -40
[ "${PIPESTATUS[0]}" = 0 ] || { echo "fresh-root: make test failed" >&2; exit 1; }
log "both commands passed on a fresh Debian 12 root ($SECONDS s)"
