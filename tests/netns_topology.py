"""The namespace floor for netlock tests: a fixture around `simulated.network.Topology`, and helpers
that run things inside the workstation (apply, TCP/UDP probes).

Import the fixtures into a test module: `from netns_topology import topology_fixture  # noqa: F401`.
Every namespace a fixture made is deleted afterwards, also when the test failed; `PREFIXES`
remembers them so a last test can prove none is left.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from floor_agent.netlock.config import NetlockConfig
from floor_agent.simulated.network import Topology

PREFIXES: list[str] = []


@contextmanager
def floor(workdir: Path) -> Iterator[Topology]:
    """A started topology, torn down on the way out whatever happened inside."""
    topo = Topology(workdir=workdir)
    PREFIXES.append(topo.prefix)
    with topo:
        yield topo


@pytest.fixture(name="topology")
def topology_fixture(tmp_path: Path) -> Iterator[Topology]:
    """Workstation, router, central server and internet host in fresh namespaces."""
    # no skip: the suite runs as root with iproute2, nftables and dnsmasq (scripts/bootstrap.sh)
    with floor(tmp_path) as topo:
        yield topo


APPLY = r"""
import json, sys
from floor_agent.netlock.config import NetlockConfig
from floor_agent.netlock import firewall
config = NetlockConfig.model_validate_json(sys.stdin.read())
try:
    result = firewall.apply(config, source="netns-topology")
except firewall.FirewallError as e:
    print(json.dumps({"error": str(e), "where": e.where, "stderr": e.stderr}))
else:
    print(json.dumps({"verified": result.verified, "previous": result.previous,
                      "script": result.script}))
"""


def apply_in(topo: Topology, config: NetlockConfig, ns: str = "ws") -> dict[str, Any]:
    """`firewall.apply` run by a process inside the namespace, as the agent would run there."""
    out = topo.python(ns, APPLY, input=config.model_dump_json()).stdout
    return json.loads(out)


PROBE = r"""
import errno, json, socket, sys, time
results = []
for proto, address, port in json.loads(sys.argv[1]):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    start = time.monotonic()
    result = {"proto": proto, "address": address, "port": port, "ok": False}
    with socket.socket(family, kind) as s:
        s.settimeout(float(sys.argv[2]))
        try:
            s.connect((address, port))
            if proto == "udp":
                s.send(b"probe")
            result["reply"] = s.recv(200).decode(errors="replace").strip()
            result["ok"] = True
        except TimeoutError:
            result["error"] = "timeout"
        except OSError as e:
            result["error"] = errno.errorcode.get(e.errno, str(e))
    result["ms"] = round((time.monotonic() - start) * 1000, 1)
    results.append(result)
print(json.dumps(results))
"""


def probe(topo: Topology, targets: list[tuple[str, str, int]], timeout: float = 2.0,
          ns: str = "ws") -> list[dict[str, Any]]:
    """TCP connect (and read the banner) / UDP send and read the echo, from inside `ns`."""
    out = topo.python(ns, PROBE, json.dumps(targets), str(timeout)).stdout
    return json.loads(out)
