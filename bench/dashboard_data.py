"""A floor's worth of audit data for the dashboard benchmark: 200 agents, 1,000,000 events.

Every event is chained and every batch ends in a signed checkpoint exactly as an agent makes
them (protocol.checkpoint, AuditEvent, Ed25519), so the store verifies and the dashboard's derived
state (the `latest` table kept at ingest) is filled by the store's own commit_batch. The bulk
load goes straight to Store.commit_batch (no HTTPS: building 1M events over the wire would take
longer than the whole benchmark); the live load afterwards goes over HTTPS, continuing the same
chains from the saved agent state.

    python bench/dashboard_data.py build  --config C.yaml --state agents.json [--events 1000000]
    python bench/dashboard_data.py report --state agents.json --url URL --ca CA [--rate 100]

`report` is the "200 agents reporting": it runs until SIGTERM, sending each agent's small
batches in turn at --rate events/s overall over keep-alive HTTPS, prints one line per minute of
what it sent to stderr, and on SIGTERM writes the chains' new heads back to --state.
"""

from __future__ import annotations

import argparse
import base64
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from floor_agent.audit.forwarder import pinned_client
from floor_agent.audit.keys import public_key_b64
from floor_agent.collector.config import CollectorConfig
from floor_agent.collector.ingest import event_params
from floor_agent.config import load_role
from floor_agent.protocol.batch import WireEvent, batch_body
from floor_agent.protocol.checkpoint import GENESIS_HASH, Checkpoint, link
from floor_agent.protocol.event import AuditEvent, canonical, utc_timestamp
from floor_agent.store import open_store
from floor_agent.store.interface import Store

ROLES = (("workstation", 190), ("door", 4), ("cctv", 6))
DOORS = ("front", "cleanroom", "store", "loading")
PEOPLE = [f"P-{n:04d}" for n in range(1, 301)]

# (kind, relative frequency, severity) per role: the kinds the real agents emit
WORKSTATION_KINDS = [
    ("net.verified", 60, "info"), ("usb.allowed", 20, "info"), ("usb.blocked", 6, "warning"),
    ("usb.removed", 10, "info"), ("net.warning", 1, "warning"), ("agent.started", 0.3, "notice"),
    ("agent.stopped", 0.3, "notice"), ("net.breach", 0.05, "critical"),
    ("net.recovered", 0.05, "notice"),
]
DOOR_KINDS = [
    ("door.granted", 60, "info"), ("door.denied", 8, "notice"), ("door.opened", 15, "info"),
    ("door.closed", 15, "info"), ("door.held_open", 0.5, "warning"),
    ("door.forced", 0.02, "critical"),
]
CCTV_KINDS = [
    ("cctv.segment", 80, "info"), ("cctv.motion_start", 8, "info"),
    ("cctv.motion_end", 8, "info"), ("cctv.stream_gap", 0.5, "warning"),
    ("cctv.tamper", 0.02, "critical"), ("cctv.tamper_cleared", 0.02, "notice"),
]
ROLE_KINDS = {"workstation": WORKSTATION_KINDS, "door": DOOR_KINDS, "cctv": CCTV_KINDS}


def sample(rng: random.Random, role: str, agent_id: str, n: int
           ) -> list[tuple[str, str, str, dict[str, Any]]]:
    """n (kind, subject, severity, data) of one agent, shaped as its real code emits them."""
    kinds = ROLE_KINDS[role]
    chosen = rng.choices(kinds, weights=[w for _, w, _ in kinds], k=n)
    return [_one(rng, role, agent_id, kind, severity) for kind, _, severity in chosen]


def _one(rng: random.Random, role: str, agent_id: str, kind: str, severity: str
         ) -> tuple[str, str, str, dict[str, Any]]:
    if kind.startswith("usb."):
        port = f"1-{rng.randint(1, 8)}"
        dev = rng.choice((("0781:5567", "SanDisk", "Cruzer Blade"),
                          ("046d:c31c", "Logitech", "USB Keyboard"),
                          ("056a:0374", "Wacom", "Intuos S")))
        data: dict[str, Any] = {"port": port, "id": dev[0], "manufacturer": dev[1],
                                "name": dev[2], "serial": f"{rng.getrandbits(40):010X}",
                                "connect_type": "hotplug"}
        if kind == "usb.blocked":
            data |= {"rule": "block with-interface one-of { 08:*:* }", "action": "deauthorized"}
        return kind, f"usb {port} {dev[0]} {dev[1]} {dev[2]}", severity, data
    if kind.startswith("net."):
        return kind, "isolation", severity, {"pass": 6, "fail": 0 if severity == "info" else 1,
                                             "unknown": 0, "ms": rng.randint(20, 90)}
    if kind.startswith("door."):
        door = DOORS[int(agent_id.rsplit("-", 1)[1]) % len(DOORS)]
        if kind in ("door.granted", "door.denied"):
            person = rng.choice(PEOPLE)
            granted = kind == "door.granted"
            reason = "ok" if granted else rng.choice(("no_access_level", "outside_schedule",
                                                      "card_inactive", "finger_mismatch"))
            return kind, f"door {door}", severity, {
                "door_id": door, "reader_id": f"{door}-in", "direction": "in",
                "uid": f"04{int(person[2:]):06X}AB", "person_id": person, "reason": reason,
                "alarms": [], "detail": ""}
        return kind, f"door {door}", severity, {"door_id": door, "detail": ""}
    camera = f"cam-{int(agent_id.rsplit('-', 1)[1]) % 4 + 1}"
    if kind == "cctv.segment":
        return kind, f"camera {camera}", severity, {
            "camera_id": camera, "path": f"{camera}/seg-{rng.getrandbits(32):08x}.mp4",
            "bytes": rng.randint(10**6, 10**8), "duration_ms": 60_000,
            "sha256": f"{rng.getrandbits(256):064x}"}
    return kind, f"camera {camera}", severity, {"camera_id": camera, "t_ms": rng.randint(0, 9999)}


@dataclass
class SimAgent:
    """One agent's identity and chain head, advanced as it emits."""

    agent_id: str
    role: str
    key: Ed25519PrivateKey
    boot_id: str
    seq: int = 0
    head: bytes = GENESIS_HASH
    last_checkpoint_ts: str = ""
    rng: random.Random = field(default_factory=random.Random)

    def chain(self, items: list[tuple[str, str, str, dict[str, Any]]], stamps: list[str]
              ) -> list[tuple[AuditEvent, bytes, bytes]]:
        """(event, canonical bytes, hash) for each item, continuing this agent's chain."""
        out = []
        for (kind, subject, severity, data), ts in zip(items, stamps, strict=True):
            self.seq += 1
            event = AuditEvent(self.agent_id, self.seq, self.boot_id, ts, kind, severity,
                               subject, data)
            body = canonical(event)
            self.head = link(self.head, body)
            out.append((event, body, self.head))
        return out

    def checkpoint(self, ts: str) -> Checkpoint:
        if ts <= self.last_checkpoint_ts:  # the collector refuses a checkpoint not newer
            ts = utc_timestamp(datetime.strptime(self.last_checkpoint_ts, "%Y-%m-%dT%H:%M:%S.%fZ")
                               .replace(tzinfo=UTC) + timedelta(microseconds=1))
        self.last_checkpoint_ts = ts
        return Checkpoint(self.agent_id, self.seq, self.head, ts, self.boot_id).sign(self.key)

    def batch(self, prev: bytes, chained: list[tuple[AuditEvent, bytes, bytes]], ts: str
              ) -> bytes:
        """The ingest body of `chained` (which followed `prev`), as the forwarder builds it."""
        return batch_body(self.agent_id, prev, [(body, h) for _, body, h in chained],
                          self.checkpoint(ts))

    def to_json(self) -> dict[str, Any]:
        raw = self.key.private_bytes(serialization.Encoding.Raw,
                                     serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption())
        return {"agent_id": self.agent_id, "role": self.role, "boot_id": self.boot_id,
                "key": base64.b64encode(raw).decode(), "seq": self.seq, "head": self.head.hex(),
                "last_checkpoint_ts": self.last_checkpoint_ts}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> SimAgent:
        key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(raw["key"]))
        return cls(raw["agent_id"], raw["role"], key, raw["boot_id"], raw["seq"],
                   bytes.fromhex(raw["head"]), raw["last_checkpoint_ts"],
                   random.Random(raw["agent_id"]))


def floor_agents(seed: int = 7) -> list[SimAgent]:
    rng = random.Random(seed)
    agents = []
    for role, count in ROLES:
        for n in range(1, count + 1):
            name = f"bench-{role[:2]}-{n:03d}"
            agents.append(SimAgent(name, role, Ed25519PrivateKey.generate(),
                                   f"boot-{rng.getrandbits(32):08x}", rng=random.Random(name)))
    return agents


def save_state(path: Path, agents: list[SimAgent]) -> None:
    path.write_bytes(orjson.dumps([a.to_json() for a in agents]))


def load_state(path: Path) -> list[SimAgent]:
    return [SimAgent.from_json(raw) for raw in orjson.loads(path.read_bytes())]


def enroll_all(store: Store, agents: list[SimAgent]) -> None:
    now = utc_timestamp()
    for agent in agents:
        if store.get_agent(agent.agent_id) is None:
            store.add_agent(agent.agent_id, agent.role, public_key_b64(agent.key), agent.agent_id,
                            now)


def bulk_load(store: Store, agents: list[SimAgent], total: int, days: int = 30,
              chunk: int = 5000, progress: Any = None) -> int:
    """total events spread evenly over the agents and over the last `days` days (oldest first),
    committed through Store.commit_batch in chunks, each ending in a signed checkpoint."""
    end = datetime.now(UTC) - timedelta(minutes=5)
    start = end - timedelta(days=days)
    per_agent = total // len(agents)
    extra = total - per_agent * len(agents)
    stored = 0
    for index, agent in enumerate(agents):
        n = per_agent + (1 if index < extra else 0)
        step = (end - start) / max(n, 1)
        offset = timedelta(seconds=agent.rng.uniform(0, step.total_seconds()))
        done = 0
        while done < n:
            size = min(chunk, n - done)
            stamps = [utc_timestamp(start + offset + step * (done + i)) for i in range(size)]
            chained = agent.chain(sample(agent.rng, agent.role, agent.agent_id, size), stamps)
            rows = [event_params(WireEvent(e, body, h), e.ts) for e, body, h in chained]
            checkpoint = agent.checkpoint(stamps[-1])
            store.commit_batch(agent.agent_id, rows, checkpoint, (agent.seq, agent.head), [],
                               stamps[-1])
            done += size
            stored += size
        if progress is not None:
            progress(stored)
    return stored


def report(agents: list[SimAgent], url: str, ca: Path, rate: float, stop: threading.Event,
           events_per_batch: int = 5) -> int:
    """Send each agent's next small batch in turn at `rate` events/s until `stop`; returns
    how many events were acknowledged. A refused batch ends the run (its reason printed)."""
    sent = 0
    started = time.monotonic()
    next_note = started + 60
    with pinned_client(url, ca, 30.0) as client:
        turn = 0
        while not stop.is_set():
            agent = agents[turn % len(agents)]
            turn += 1
            prev = agent.head
            now = utc_timestamp()
            chained = agent.chain(sample(agent.rng, agent.role, agent.agent_id,
                                         events_per_batch), [now] * events_per_batch)
            answer = client.post("/api/v1/ingest", content=agent.batch(prev, chained, now))
            if answer.status_code != 200:
                print(f"report: {agent.agent_id} refused: {answer.status_code} {answer.text}",
                      file=sys.stderr, flush=True)
                return sent
            sent += events_per_batch
            due = started + sent / rate
            stop.wait(max(0.0, due - time.monotonic()))
            if time.monotonic() >= next_note:
                next_note += 60
                print(f"report: {sent} events from {len(agents)} agents", file=sys.stderr,
                      flush=True)
    return sent


def progress_note(every: int) -> Any:
    """A progress callback printing to stderr each time the count passes a multiple of every."""
    shown = [0]

    def note(stored: int) -> None:
        if stored // every > shown[0]:
            shown[0] = stored // every
            print(f"# {stored} events stored", file=sys.stderr, flush=True)

    return note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="enroll the agents and bulk-load the store")
    build.add_argument("--config", type=Path, required=True, help="the collector's YAML")
    build.add_argument("--state", type=Path, required=True, help="agents' keys and heads (out)")
    build.add_argument("--events", type=int, default=1_000_000)
    live = sub.add_parser("report", help="200 agents reporting over HTTPS until SIGTERM")
    live.add_argument("--state", type=Path, required=True)
    live.add_argument("--url", required=True)
    live.add_argument("--ca", type=Path, required=True)
    live.add_argument("--rate", type=float, default=100.0, help="events/s over all agents")
    args = parser.parse_args(argv)
    if args.command == "build":
        config = load_role(args.config, CollectorConfig)
        store = open_store(config.collector.resolved_database_url())
        agents = floor_agents()
        started = time.perf_counter()
        try:
            enroll_all(store, agents)
            total = bulk_load(store, agents, args.events, progress=progress_note(100_000))
        finally:
            store.close()
        save_state(args.state, agents)
        print(f"built: {total} events from {len(agents)} agents in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    agents = load_state(args.state)
    sent = report(agents, args.url, args.ca, args.rate, stop)
    print(f"reported: {sent} events", flush=True)
    if not stop.is_set():
        return 1  # a refused batch: the saved heads would no longer match the store
    save_state(args.state, agents)  # where the chains are now, for a later run on this store
    return 0


if __name__ == "__main__":
    sys.exit(main())
