#!/bin/sh
# /usr/bin/floor-agent (floor-agent-common): runs the command with an installed role package's
# tree, /usr/lib/floor-agent/<role>. Which role: the one the command names (`workstation`,
# `usb`, `netlock` -> workstation; `door`; `cctv`; `collector`, `report`, `privacy` ->
# collector; `retention`), else the one its --config file is named after (door.yaml -> door),
# else the first installed. The units run their role's tree directly.
set -e
TREES=/usr/lib/floor-agent
role=
case "${1:-}" in
  workstation|usb|netlock) role=workstation ;;
  door|cctv|collector|retention) role=$1 ;;
  report|privacy) role=collector ;;
esac
if [ -z "$role" ]; then
  prev=
  for arg in "$@"; do
    case "$arg" in
      --config=*) role=$(basename "${arg#--config=}" .yaml) ;;
      *) [ "$prev" = --config ] && role=$(basename "$arg" .yaml) ;;
    esac
    prev=$arg
  done
  [ -n "$role" ] && [ ! -x "$TREES/$role/bin/floor-agent" ] && role=
fi
if [ -z "$role" ]; then
  for r in workstation door cctv collector retention; do
    if [ -x "$TREES/$r/bin/floor-agent" ]; then role=$r; break; fi
  done
fi
if [ -z "$role" ] || [ ! -x "$TREES/$role/bin/floor-agent" ]; then
  echo "floor-agent: ${role:+the $role role is }not installed (apt install floor-agent-${role:-<role>})" >&2
  exit 1
fi
exec "$TREES/$role/bin/floor-agent" "$@"
