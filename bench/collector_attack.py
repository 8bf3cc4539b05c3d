"""Collector under attack (issue 15): genuine agents and a dashboard user while outsiders attack.

    .venv/bin/python bench/collector_attack.py                 # SQLite, 20 s quiet + 30 s attack
    .venv/bin/python bench/collector_attack.py --postgres      # the store on a throwaway PG 15
    .venv/bin/python bench/collector_attack.py --quiet 10 --attack 15 --idle 200

One run, one real collector process (`floor-agent collector run`, tests/collector_process.py)
over HTTPS on loopback, with its default limits:

1. Genuine agents (--agents, workstations) are enrolled over HTTPS with one-time tokens from
   127.0.0.1 and send chained, signed batches of --batch events (bench/attack_load.py genuine,
   a process of its own), closed loop by default: each sends its next batch once the last is
   answered, so their rate is what the collector can take. A refused or failed batch is sent
   again from the last acknowledged head after a backoff, as the forwarder does.
2. A dashboard user, logged in over HTTPS (the login form, its CSRF cookie), loads the
   overview `/` every --probe-interval s on a fresh TLS connection; a failed load counts as
   the 10 s timeout in the p95.
3. Quiet phase (--quiet s), then the attack phase (--attack s) with the same genuine load, and
   concurrently from 127.0.0.2 ... 127.0.0.(1 + --addresses) (bench/attack_load.py attack):
   --idle TLS connections that send nothing and --half-line that send half a request line;
   --slow-per-route bodies (--slow-length 2 KiB declared, within every route's limit) trickled
   at a few bytes a second to enroll, POST /login and ingest;
   --oversize-mib bodies at full speed to enroll and POST /login; --stalled-ingest ingest
   bodies sent up to the last KiB of the ingest limit and held; junk batches (random
   signatures naming the real agents' ids) at --junk-rate per second; --logins parallel login
   loops, half guessing a known user's password, half unknown names. Each attack comes from
   addresses of its own (junk 1/8 of them, logins 1/6, bodies 1/6, idle connections the
   rest). Closed connections are reopened, so the pressure holds.
4. Half-way through the attack a genuine door controller (enrolled like the others) reports a
   critical `door.forced`; once the attack stops, is its alert on the first page of
   /api/v1/alerts (default page) and of the dashboard's /alerts?
5. Drain (at most --drain s): the agents emit nothing new and deliver what is pending; then
   every seq each agent emitted is looked up in the store (lost = emitted, not stored).

The collector's resident memory (VmRSS of it and its ingest worker processes, from
/proc/PID/status) is sampled every 0.2 s throughout. Above --rss-abort-mib the attack is
stopped early (the machine is shared) and the run says so.

Targets (issue 15): genuine ingest under attack >= 50 % of the quiet rate of the same run;
overview p95 <= 1 s under attack; collector resident memory <= 1 GiB throughout; 0 genuine
events lost; the genuine critical alert on the first alerts page (API and dashboard).
Prints a JSON document and a table, then a markdown block for BENCHMARKS.md with the command.
Loopback only; every process it starts and its temporary directory are removed at the end,
Ctrl-C included.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))  # the tests' collector and PostgreSQL helpers

import httpx  # noqa: E402
import orjson  # noqa: E402
from attack_load import AttackPlan  # noqa: E402
from collector_ingest import process_cpu  # noqa: E402
from collector_process import CollectorProcess  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from dashboard_data import SimAgent, save_state  # noqa: E402

from floor_agent.audit.keys import public_key_b64  # noqa: E402
from floor_agent.collector import self_audit  # noqa: E402
from floor_agent.dashboard import passwords, user_admin  # noqa: E402
from floor_agent.protocol.event import utc_timestamp  # noqa: E402
from floor_agent.store.interface import Store  # noqa: E402

TARGET_RATIO = 0.5
TARGET_P95_MS = 1000.0
TARGET_RSS_MIB = 1024.0
PROBE_TIMEOUT = 10.0
USER, VICTIM = "bench", "victim"
PASSWORD = "bench password 1234"
DOOR = "bench-door-01"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
ALERT_ROW_RE = re.compile(r'data-testid="alert-row" data-alert-id="(\d+)"')


def note(text: str) -> None:
    print(f"# {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ pure figures
def percentile(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def rate_between(acks: list[tuple[float, int]], start: float, end: float) -> float:
    """Events acknowledged per second with the acknowledgement inside [start, end)."""
    return sum(n for t, n in acks if start <= t < end) / max(end - start, 1e-9)


def tally(failures: list[tuple[float, str]], start: float, end: float) -> dict[str, int]:
    """How many genuine batches failed in [start, end), by reason."""
    out: dict[str, int] = {}
    for t, why in failures:
        if start <= t < end:
            out[why] = out.get(why, 0) + 1
    return out


@dataclass
class Probe:
    at: float  # monotonic start
    ms: float
    status: str  # "200", "503", "ConnectTimeout", ...


def probe_summary(probes: list[Probe], start: float, end: float) -> dict[str, Any]:
    """p50/p95/max of the loads started in [start, end); a failed one counts as the timeout."""
    mine = [p for p in probes if start <= p.at < end]
    ms = [p.ms if p.status == "200" else PROBE_TIMEOUT * 1000 for p in mine]
    failed: dict[str, int] = {}
    for p in mine:
        if p.status != "200":
            failed[p.status] = failed.get(p.status, 0) + 1
    return {"n": len(mine), "failed": failed, "p50_ms": percentile(ms, 50),
            "p95_ms": percentile(ms, 95), "max_ms": max(ms) if ms else math.nan}


def lost_events(agents: list[dict[str, Any]], stored: dict[str, set[int]]) -> dict[str, int]:
    """Emitted but not stored, and (worse) acknowledged but not stored, over all agents."""
    lost = acked_missing = emitted = 0
    for a in agents:
        have = stored.get(a["agent_id"], set())
        emitted += a["emitted"]
        lost += sum(1 for s in range(1, a["emitted"] + 1) if s not in have)
        acked_missing += sum(1 for s in range(1, a["acked"] + 1) if s not in have)
    return {"emitted": emitted, "lost": lost, "acknowledged_not_stored": acked_missing}


def yes(flag: bool) -> str:
    return "yes" if flag else "no"


def answered(counts: dict[str, float], prefix: str) -> int:
    """Attack requests of one kind the collector answered with a status (any status)."""
    return int(sum(v for k, v in counts.items()
                   if k.startswith(prefix) and k.split(".")[1].isdigit()))


def verdicts(r: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(target, measured, wanted, met) for each of issue 15's targets."""
    ratio = r["ingest"]["ratio"]
    p95 = r["overview"]["attack"]["p95_ms"]
    rss = r["memory"]["peak_mib"]
    lost = r["events"]["lost"] + r["events"]["acknowledged_not_stored"]
    alert = r["critical_alert"]
    return [
        ("genuine ingest under attack", f"{ratio:.0%} of quiet "
         f"({r['ingest']['attack_events_per_s']:,.0f} vs {r['ingest']['quiet_events_per_s']:,.0f}"
         f" events/s)", f">= {TARGET_RATIO:.0%}", ratio >= TARGET_RATIO),
        ("overview p95 under attack", f"{p95:,.0f} ms ({r['overview']['attack']['n']} loads, "
         f"{sum(r['overview']['attack']['failed'].values())} failed)",
         f"<= {TARGET_P95_MS:,.0f} ms", p95 <= TARGET_P95_MS),
        ("collector resident memory, peak", f"{rss:,.0f} MiB"
         + (" (attack stopped early at the safety limit)" if r["memory"]["aborted"] else ""),
         f"<= {TARGET_RSS_MIB:,.0f} MiB", rss <= TARGET_RSS_MIB and not r["memory"]["aborted"]),
        ("genuine events lost", f"{r['events']['lost']} of {r['events']['emitted']:,} "
         f"({r['events']['acknowledged_not_stored']} acknowledged but not stored)", "0",
         lost == 0),
        ("genuine critical alert on the first alerts page",
         f"API {yes(alert['api_first_page'])}, dashboard {yes(alert['dashboard_first_page'])}"
         + (f" ({alert['newer_alerts']} newer alert rows; {r['junk_answered']:,} junk batches "
            f"answered in all)" if alert["newer_alerts"] is not None else ""), "both",
         bool(alert["api_first_page"] and alert["dashboard_first_page"])),
    ]


# ------------------------------------------------------------------------------ processes
def https_client(url: str, ca: Path, timeout: float) -> httpx.Client:
    """Pinned to the collector's CA, without the agents' JSON content-type (forms go too)."""
    return httpx.Client(base_url=url, verify=ssl.create_default_context(cafile=str(ca)),
                        timeout=timeout)


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (the collector's ingest worker processes)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def tree_rss_mib(pid: int) -> float:
    """VmRSS of pid and all its descendants, MiB."""
    total = 0.0
    for current in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
    return total


def tree_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by pid and its living descendants."""
    total = 0.0
    for current in process_tree(pid) if pid else []:
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += process_cpu(current)
    return total


class CpuMarks:
    """CPU seconds of the collector, the genuine agents and the attackers at phase marks."""

    def __init__(self) -> None:
        self.marks: dict[str, dict[str, float]] = {}

    def mark(self, name: str, **pids: int | None) -> None:
        self.marks[name] = {who: tree_cpu(pid) for who, pid in pids.items()}

    def share(self, start: str, end: str, seconds: float) -> dict[str, str]:
        """Each process's CPU between two marks, in cores."""
        a, b = self.marks.get(start, {}), self.marks.get(end, {})
        return {who: f"{(b[who] - a.get(who, 0.0)) / seconds:.2f} cores" for who in b}


class Sampler(threading.Thread):
    """RSS every 0.2 s; sets `over` once the safety limit is passed."""

    def __init__(self, pid: int, abort_mib: float) -> None:
        super().__init__(daemon=True, name="rss")
        self.pid = pid
        self.abort_mib = abort_mib
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.over = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            mib = tree_rss_mib(self.pid)
            self.samples.append((time.monotonic(), mib))
            if mib > self.abort_mib:
                self.over.set()

    def peak(self, start: float = 0.0, end: float = math.inf) -> float:
        return max((m for t, m in self.samples if start <= t < end), default=math.nan)


class Prober(threading.Thread):
    """The logged-in user loading the overview, each time on a new TLS connection."""

    def __init__(self, url: str, ca: Path, session: str, interval: float) -> None:
        super().__init__(daemon=True, name="overview")
        self.url, self.ca, self.session, self.interval = url, ca, session, interval
        self.probes: list[Probe] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                with https_client(self.url, self.ca, PROBE_TIMEOUT) as client:
                    answer = client.get("/", headers={"cookie": f"floor_session={self.session}"})
                    status = str(answer.status_code)
                    if status == "200" and 'data-testid="workstations"' not in answer.text:
                        status = "200-without-overview"
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            self.probes.append(Probe(started, (time.monotonic() - started) * 1000, status))
            self.stop.wait(max(0.0, started + self.interval - time.monotonic()))


def start_child(work: Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    log = (work / f"{name}.log").open("ab")
    return subprocess.Popen([sys.executable, str(BENCH / "attack_load.py"), name, *args],
                            stdout=log, stderr=subprocess.STDOUT)


def end_child(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM,
              wait: float = 20.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------------------ the floor
def make_users(collector: CollectorProcess) -> None:
    """The dashboard user who watches, and a known name the attackers guess at."""
    store = collector.store()
    own = self_audit.open_writer(collector.config)
    try:
        for name in (USER, VICTIM):
            user_admin.create(store, own, name, "viewer", "bench", utc_timestamp())
            store.update_user(name, utc_timestamp(),
                              password_hash=passwords.hash_password(PASSWORD), must_change=False)
    finally:
        own.close()
        store.close()


def enroll(collector: CollectorProcess, agent_id: str, role: str) -> SimAgent:
    """A new agent, enrolled over HTTPS with a one-time token as `floor-agent enroll` does."""
    agent = SimAgent(agent_id, role, Ed25519PrivateKey.generate(),
                     f"boot-{random.getrandbits(32):08x}", rng=random.Random(agent_id))
    with https_client(collector.url, collector.ca, 30) as client:
        answer = client.post("/api/v1/enroll", json={
            "token": collector.token(role), "agent_id": agent_id, "role": role,
            "public_key": public_key_b64(agent.key), "hostname": f"{agent_id}.floor"})
    if answer.status_code != 201:
        raise RuntimeError(f"enroll {agent_id}: {answer.status_code} {answer.text}")
    return agent


def log_in(collector: CollectorProcess) -> str:
    """The session id the login form gives USER, over HTTPS."""
    with https_client(collector.url, collector.ca, 30) as client:
        form = client.get("/login")
        match = CSRF_RE.search(form.text)
        if form.status_code != 200 or match is None:
            raise RuntimeError(f"login form: {form.status_code}")
        answer = client.post("/login", data={"username": USER, "password": PASSWORD,
                                             "csrf_token": match[1], "next": "/"},
                             headers={"cookie": f"floor_login={form.cookies['floor_login']}"})
        session = answer.cookies.get("floor_session")
    if answer.status_code != 303 or not session:
        raise RuntimeError(f"login: {answer.status_code} {answer.text[:300]}")
    return str(session)


@dataclass
class Critical:
    """The genuine door.forced sent during the attack, retried until acknowledged."""

    sent_at: float | None = None
    acked_at: float | None = None
    attempts: list[str] = field(default_factory=list)


def raise_critical(collector: CollectorProcess, door: SimAgent, result: Critical,
                   until: float) -> None:
    now = utc_timestamp()
    prev = door.head
    chained = door.chain([("door.forced", "door front", "critical",
                           {"door_id": "front", "detail": "bench: forced during the attack"})],
                         [now])
    result.sent_at = time.monotonic()
    while time.monotonic() < until:
        try:
            with https_client(collector.url, collector.ca, 10) as client:
                answer = client.post("/api/v1/ingest", headers={"content-type": "application/json"},
                                     content=door.batch(prev, chained, utc_timestamp()))
            result.attempts.append(str(answer.status_code))
            if answer.status_code == 200:
                result.acked_at = time.monotonic()
                return
        except httpx.HTTPError as exc:
            result.attempts.append(type(exc).__name__)
        time.sleep(random.uniform(0.25, 1.0))


def alert_check(collector: CollectorProcess, api_key: str, session: str) -> dict[str, Any]:
    """Is the door's alert on the first page of /api/v1/alerts and of /alerts?"""
    store = collector.store()
    try:
        mine = store.list_alerts(agent_id=DOOR, kind="door.forced", limit=5)
        newest = store.list_alerts(limit=1)
    finally:
        store.close()
    out: dict[str, Any] = {"alert_id": mine[0]["id"] if mine else None,
                           "api_first_page": False, "dashboard_first_page": False,
                           "newer_alerts": None}
    if not mine:
        out["why"] = "the door.forced alert was never stored"
        return out
    alert_id = int(mine[0]["id"])
    out["newer_alerts"] = int(newest[0]["id"]) - alert_id if newest else 0  # ids are in order
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with https_client(collector.url, collector.ca, 15) as client:
                api = client.get("/api/v1/alerts", headers={"authorization": f"Bearer {api_key}"})
                page = client.get("/alerts", headers={"cookie": f"floor_session={session}"})
            if api.status_code == 200 and page.status_code == 200:
                out["api_first_page"] = alert_id in [a["id"] for a in api.json()["alerts"]]
                out["dashboard_first_page"] = str(alert_id) in ALERT_ROW_RE.findall(page.text)
                return out
            out["why"] = f"pages answered {api.status_code} / {page.status_code}"
        except httpx.HTTPError as exc:
            out["why"] = f"pages not served: {type(exc).__name__}"
        time.sleep(1)
    return out


def stored_seqs(store: Store, agents: list[dict[str, Any]]) -> dict[str, set[int]]:
    return {a["agent_id"]: set(store.stored_hashes(a["agent_id"], [1, max(1, a["emitted"])]))
            - {0} for a in agents}


def chain_states(collector: CollectorProcess, api_key: str) -> dict[str, str]:
    with https_client(collector.url, collector.ca, 30) as client:
        answer = client.get("/api/v1/agents", headers={"authorization": f"Bearer {api_key}"})
    if answer.status_code != 200:
        return {"?": f"HTTP {answer.status_code}"}
    return {a["agent_id"]: a.get("chain_state", "?") for a in answer.json()["agents"]}


# ------------------------------------------------------------------------------ the run
def attack_plan(args: argparse.Namespace, agent_ids: list[str]) -> AttackPlan:
    return AttackPlan(addresses=args.addresses, idle=args.idle, half_line=args.half_line,
                      slow_per_route=args.slow_per_route, slow_bytes_per_s=args.slow_bytes,
                      slow_length=args.slow_length,
                      oversize_mib=args.oversize_mib, oversize_streams=args.oversize_streams,
                      stalled_ingest=args.stalled_ingest, junk_rate=args.junk_rate,
                      junk_connections=args.junk_connections,
                      junk_agent_ids=tuple(agent_ids), logins=args.logins, known_user=VICTIM)


def run(args: argparse.Namespace, work: Path, database_url: str | None) -> dict[str, Any]:
    collector = CollectorProcess(work / "floor", database_url)
    genuine = attacker = None
    sampler = prober = None
    try:
        make_users(collector)
        collector.start()
        assert collector.proc is not None
        agents = [enroll(collector, f"bench-ws-{i + 1:02d}", "workstation")
                  for i in range(args.agents)]
        door = enroll(collector, DOOR, "door")
        save_state(work / "agents.json", agents)
        session = log_in(collector)
        api_key = collector.api_key("bench")
        (work / "plan.json").write_bytes(orjson.dumps(asdict(attack_plan(
            args, [a.agent_id for a in [*agents, door]]))))
        total = args.warmup + args.quiet + args.attack + args.drain + 60
        sampler = Sampler(collector.proc.pid, args.rss_abort_mib)
        sampler.start()
        genuine = start_child(work, "genuine", "--state", str(work / "agents.json"), "--url",
                              collector.url, "--ca", str(collector.ca), "--batch",
                              str(args.batch), "--rate", str(args.rate), "--seconds", str(total),
                              "--out", str(work / "genuine.json"))
        prober = Prober(collector.url, collector.ca, session, args.probe_interval)
        prober.start()
        cpu = CpuMarks()
        time.sleep(args.warmup)
        cpu.mark("quiet", collector=collector.proc.pid, genuine=genuine.pid)
        quiet_start = time.monotonic()
        note(f"quiet phase: {args.quiet:g} s")
        time.sleep(args.quiet)
        cpu.mark("attack", collector=collector.proc.pid, genuine=genuine.pid)
        attack_start = time.monotonic()
        note(f"attack phase: {args.attack:g} s")
        attacker = start_child(work, "attack", "--url", collector.url, "--plan",
                               str(work / "plan.json"), "--seconds", str(args.attack + 30),
                               "--out", str(work / "attack.json"))
        critical = Critical()
        sender = threading.Thread(target=raise_critical, daemon=True, args=(
            collector, door, critical, attack_start + args.attack + args.drain))
        sampler.over.wait(args.attack / 2)
        sender.start()
        sampler.over.wait(max(0.0, attack_start + args.attack - time.monotonic()))
        aborted = sampler.over.is_set()
        if aborted:
            note(f"collector above {args.rss_abort_mib} MiB: attack stopped early")
        cpu.mark("end", collector=collector.proc.pid, genuine=genuine.pid,
                 attackers=attacker.pid)
        attack_end = time.monotonic()
        end_child(attacker)
        note("attack stopped; checking the alerts pages, then draining")
        sender.join(max(0.0, attack_end + args.drain - time.monotonic()))
        alert = alert_check(collector, api_key, session)
        genuine.send_signal(signal.SIGUSR1)
        with contextlib.suppress(subprocess.TimeoutExpired):
            genuine.wait(args.drain)
        end_child(genuine)
        prober.stop.set()
        sampler.stop.set()
        prober.join(PROBE_TIMEOUT + 5)
        sampler.join(5)
        sent = orjson.loads((work / "genuine.json").read_bytes())
        attacked = (orjson.loads((work / "attack.json").read_bytes())
                    if (work / "attack.json").exists() else {})
        alive = collector.proc.poll() is None
        states = chain_states(collector, api_key) if alive else {}
        everyone = [*sent["agents"], {"agent_id": DOOR, "emitted": door.seq,
                                      "acked": door.seq if critical.acked_at else 0}]
        store = collector.store()
        try:
            stored = stored_seqs(store, everyone)
            alert_rows = store.alert_counts()
        finally:
            store.close()
    finally:
        for thread in (prober, sampler):
            if thread is not None:
                thread.stop.set()
        end_child(attacker, wait=10)
        end_child(genuine, wait=10)
        collector.stop()
    acks = [(float(t), int(n)) for t, n in sent["acks"]]
    quiet = rate_between(acks, quiet_start, attack_start)
    under = rate_between(acks, attack_start, attack_end)
    failures = [(float(t), str(why)) for t, why in sent["failures"]]
    genuine_ids = {a["agent_id"] for a in sent["agents"]}
    return {
        "store": "postgresql" if database_url else "sqlite",
        "phases_s": {"quiet": round(attack_start - quiet_start, 1),
                     "attack": round(attack_end - attack_start, 1)},
        "ingest": {"quiet_events_per_s": quiet, "attack_events_per_s": under,
                   "ratio": under / quiet if quiet else 0.0,
                   "agents": args.agents, "batch": args.batch,
                   "mode": f"paced {args.rate:g} events/s" if args.rate else "closed loop",
                   "failed_batches_quiet": tally(failures, quiet_start, attack_start),
                   "failed_batches_under_attack": tally(failures, attack_start, attack_end)},
        "overview": {"quiet": probe_summary(prober.probes, quiet_start, attack_start),
                     "attack": probe_summary(prober.probes, attack_start, attack_end)},
        "cpu": {"quiet": cpu.share("quiet", "attack", attack_start - quiet_start),
                "attack": cpu.share("attack", "end", attack_end - attack_start)},
        "memory": {"peak_mib": sampler.peak(), "quiet_peak_mib": sampler.peak(quiet_start,
                                                                              attack_start),
                   "attack_peak_mib": sampler.peak(attack_start, attack_end + 5),
                   "samples": len(sampler.samples), "aborted": aborted},
        "events": lost_events(everyone, stored),
        "critical_alert": {**alert, "ack_after_s": (
            None if critical.acked_at is None or critical.sent_at is None
            else round(critical.acked_at - critical.sent_at, 2)),
            "attempts": critical.attempts},
        "genuine_agents_shown_broken": sorted(a for a, s in states.items()
                                              if a in genuine_ids | {DOOR} and s == "broken"),
        "alert_rows": {f"{agent}/{kind}": n for (agent, kind), n in sorted(
            alert_rows.items(), key=lambda kv: -kv[1])[:8]},
        "junk_answered": answered(attacked.get("counts", {}), "junk."),
        "collector_alive_at_end": alive,
        "attack": attacked,
    }


# ------------------------------------------------------------------------------ report
def table(r: dict[str, Any]) -> str:
    lines = ["| target | measured | wanted | |", "|---|---|---|---|"]
    for name, measured, wanted, met in verdicts(r):
        lines.append(f"| {name} | {measured} | {wanted} | {'met' if met else 'NOT met'} |")
    return "\n".join(lines)


def markdown(args: argparse.Namespace, r: dict[str, Any], commit: str) -> str:
    command = "    .venv/bin/python bench/collector_attack.py " + " ".join(sys.argv[1:])
    counts = r["attack"].get("counts", {})
    junk = answered(counts, "junk.")
    logins = answered(counts, "login_known.") + answered(counts, "login_unknown.")
    q, a = r["overview"]["quiet"], r["overview"]["attack"]
    return "\n".join([
        f"### Collector under attack (bench/collector_attack.py, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, tree at {commit})",
        "",
        command.rstrip(),
        "",
        f"Store {r['store']}; {args.agents} genuine agents, batches of {args.batch}, "
        f"{r['ingest']['mode']}; quiet {r['phases_s']['quiet']} s, attack "
        f"{r['phases_s']['attack']} s from {args.addresses} addresses: {args.idle} idle TLS + "
        f"{args.half_line} half-line connections, {args.slow_per_route} slow bodies per route "
        f"(enroll, login, ingest), {args.oversize_streams} x {args.oversize_mib} MiB bodies per "
        f"route (enroll, login), {args.stalled_ingest} stalled ingest bodies, junk batches at "
        f"{args.junk_rate:g}/s ({junk:,} answered), {args.logins} parallel login loops "
        f"({logins:,} answered).",
        "",
        table(r),
        "",
        f"Overview quiet: p50 {q['p50_ms']:,.0f} ms, p95 {q['p95_ms']:,.0f} ms (n={q['n']}); "
        f"under attack: p50 {a['p50_ms']:,.0f} ms, p95 {a['p95_ms']:,.0f} ms, max "
        f"{a['max_ms']:,.0f} ms (n={a['n']}, failed {a['failed'] or 0}). Memory peak quiet "
        f"{r['memory']['quiet_peak_mib']:,.0f} MiB, under attack "
        f"{r['memory']['attack_peak_mib']:,.0f} MiB. Genuine batches refused or failed under "
        f"attack: {r['ingest']['failed_batches_under_attack'] or 'none'}. Genuine agents shown "
        f"`broken` afterwards: {len(r['genuine_agents_shown_broken'])}. CPU quiet "
        f"{r['cpu']['quiet']}, under attack {r['cpu']['attack']} (2 cores, shared). "
        f"Most alert rows: {r['alert_rows']}."
        + ("" if r["collector_alive_at_end"] else " The collector process EXITED during the run."),
    ])


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=BENCH.parent,
                              capture_output=True, text=True, timeout=10).stdout.strip() or "?"
    except OSError:
        return "?"


def interrupted(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--postgres", action="store_true", help="store on a throwaway PostgreSQL 15 "
                                                "(tests/postgres_server.py)")
    add("--quiet", type=float, default=20.0, help="quiet phase, s (20)")
    add("--attack", type=float, default=30.0, help="attack phase, s (30)")
    add("--warmup", type=float, default=3.0, help="genuine load before the quiet phase, s")
    add("--drain", type=float, default=30.0, help="at most this long to deliver what is "
                                                  "pending after the attack, s (30)")
    add("--agents", type=int, default=4, help="genuine agents (4)")
    add("--batch", type=int, default=100, help="events per genuine batch (100)")
    add("--rate", type=float, default=0.0, help="genuine events/s overall; 0: closed loop")
    add("--probe-interval", type=float, default=0.5, help="overview load every N s (0.5)")
    add("--addresses", type=int, default=59, help="attacker addresses 127.0.0.2.. (59)")
    add("--idle", type=int, default=600, help="idle TLS connections (600)")
    add("--half-line", type=int, default=200, help="connections sending half a request line")
    add("--slow-per-route", type=int, default=20, help="slow bodies per route (20)")
    add("--slow-bytes", type=int, default=4, help="slow body bytes per second (4)")
    add("--slow-length", type=int, default=2048, help="slow body declared length (2048)")
    add("--oversize-mib", type=int, default=128, help="oversized body size, MiB (128)")
    add("--oversize-streams", type=int, default=2, help="oversized bodies at once per route")
    add("--stalled-ingest", type=int, default=40, help="stalled 16 MiB ingest bodies (40)")
    add("--junk-rate", type=float, default=400.0, help="junk batches per second (400)")
    add("--junk-connections", type=int, default=8)
    add("--logins", type=int, default=40, help="parallel login loops (40)")
    add("--rss-abort-mib", type=float, default=4096.0,
        help="stop the attack early above this collector RSS (4096; the host is shared)")
    add("--json", type=Path, help="also write the JSON document here")
    add("--dir", type=Path, help="where the temporary work directory goes")
    add("--keep", action="store_true", help="keep the work directory (logs, store)")
    args = parser.parse_args(argv)
    if not 1 <= args.addresses <= 249:
        parser.error("--addresses: 1 to 249 (127.0.0.2 ... 127.0.0.250)")
    # SIGTERM ends the run as Ctrl-C does, through the finally blocks that clean up; SIGINT
    # too when a shell started this in the background with SIGINT ignored
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, interrupted)
    work = Path(tempfile.mkdtemp(prefix="attackbench-", dir=args.dir))
    postgres = None
    try:
        database_url = None
        if args.postgres:
            from postgres_server import PostgresServer

            postgres = PostgresServer().start()
            database_url = postgres.new_database()
        results = run(args, work, database_url)
    except KeyboardInterrupt:
        note("interrupted: processes stopped, work directory removed")
        return 130
    finally:
        if postgres is not None:
            postgres.stop()
        if args.keep:
            note(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["targets"] = [{"target": n, "measured": m, "wanted": w, "met": ok}
                          for n, m, w, ok in verdicts(results)]
    document = orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
    print(document.decode())
    if args.json:
        args.json.write_bytes(document)
    print()
    print(table(results))
    print()
    print(markdown(args, results, git_commit()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
