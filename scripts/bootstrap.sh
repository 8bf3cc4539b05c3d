#!/usr/bin/env bash
# Install what floor-agent needs on Debian 12 (as root): Debian packages, a virtual
# environment in .venv, and the package itself. Idempotent and quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: the Python toolchain for the venv, systemd-analyze for the unit tests,
# PostgreSQL 15 for the store tests (the tests start their own throwaway server), sqlite3 and
# curl for admins poking at the demo; umockdev (a simulated udev/sysfs USB bus, driven from
# Debian's python3-gi for hot-plug) and usbguard
# (the reference: its rule parser and generate-policy), udev (udevadm test proves the generated
# udev rules) and util-linux (unshare, setpriv) for the usb_guard tests; nftables (netlock
# enforces with `nft -f`), iproute2 (network namespaces for its tests) and dnsmasq-base (a real
# resolver inside a test namespace); pcscd, libpcsclite-dev (pyscard builds against it) and
# vsmartcard-vpcd (a virtual smart-card reader a test's card thread plugs into) for access;
# GStreamer's RTSP server and plugins (a real RTSP camera in the tests), ffmpeg and
# openssh-server (a real sshd on loopback for the SFTP offload tests) for cctv; chromium
# (the dashboard's browser tests drive Debian's build, never a downloaded one), the Pango
# libraries and a font WeasyPrint renders the TOM report's PDF with, and poppler-utils
# (pdftoppm turns that PDF into PNG pages in the tests); rsyslog with its GnuTLS driver (the
# notification tests start Debian's rsyslogd with a private config on a loopback TCP/TLS port:
# the collector's RFC 5424 and CEF messages are received by the syslog daemon sites run).
PACKAGES=(python3 python3-venv python3-dev gcc systemd postgresql-15 sqlite3 curl ca-certificates
          umockdev gir1.2-umockdev-1.0 python3-gi usbguard udev util-linux
          nftables iproute2 dnsmasq-base
          pcscd libpcsclite-dev vsmartcard-vpcd
          gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-good
          gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
          gstreamer1.0-tools ffmpeg openssh-server openssh-client
          chromium libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core poppler-utils
          rsyslog rsyslog-gnutls)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: missing Debian packages (${missing[*]}); run as root" >&2
    exit 1
  fi
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
  || { echo "bootstrap: Python 3.11 or newer needed" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.floor-agent-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  echo "$want" > "$stamp"
fi
