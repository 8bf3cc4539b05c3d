"""Central workstation policy (issue 20): approval to device authorized, and a version rolled out
to 200 workstations.

    .venv/bin/python bench/policy.py                  # ~3 min: 25 approvals, 200 x 5 rollouts
    .venv/bin/python bench/policy.py --approvals 5 --workstations 50 --rollouts 2   # quick look
    .venv/bin/python bench/policy.py --skip-rollout           # only the approvals
    .venv/bin/python bench/policy.py --click-approvals 25 --skip-approvals --skip-rollout
                                                              # only the dashboard's click

Needs root and Debian's umockdev, gir1.2-umockdev-1.0, python3-gi (scripts/bootstrap.sh).
Prints one line per figure on stdout (and a JSON summary last); progress goes to stderr. Exit
status 1 when the approval's p95 is past its target.

1. policy_approval_*: a real collector process and one real `floor-agent workstation` process
   (enrolled with a token, `policy.enabled: true`, usb_guard on) on a umockdev bus with a USB
   stick the shipped rules block (tests/policy_floor.py, the end-to-end tests' floor). Each
   round approves an exception for that stick on that workstation from its `usb.blocked` event
   as the collector stored it (POST /api/v1/policy/exceptions, the call the dashboard's form
   handler makes through the same policy_admin.approve), and the clock runs from just before
   the POST to the stick's sysfs `authorized` reading 1 (polled every 2 ms from outside the
   agent); then the exception is withdrawn and the stick blocked again before the next round.
   The click's own page round trip is not in it. Target p95 <= 3 s.
1b. policy_approval_click_* (`--click-approvals N`): the same, approved the way an admin does
   it: an admin logged in through the login page in Debian's Chromium (Playwright,
   tests/browser.py) on the collector's dashboard opens /policy/blocked, picks the stick's
   section (its newest usb.blocked event: after a withdrawal the agent blocks the stick again
   and the page lists that new event), chooses "this workstation", types a reason; the clock
   runs from just before the click on Approve to the stick's sysfs `authorized` reading 1, so
   the form's POST and the dashboard's handler are in it (the answer page's rendering may end
   after). Then the exception is withdrawn (the admin API, as in 1) and the page reloaded
   until the stick's new blocked event is listed. Target p95 <= 3 s.
2. policy_rollout_*: the same collector; `--workstations` enrolled agent identities (tokens,
   keys, the policy key pinned at enrollment) in `--processes` worker processes, each running
   the real ws_policy sync (PolicyClient, PolicySync: signed pulls and the long poll), the real
   PolicyEnforcer (verify, cache on disk, apply) over a simulated USB guard that only takes the
   rules (no sysfs, no nftables: netlock off), and the real audit path (spool, forwarder) that
   reports `policy.applied` to the collector. Each has a loopback address of its own
   (127.0.1.x, as 200 machines would; the collector's per-address connection cap is 64). The
   clock runs from just before the admin's POST changing the default group to the collector
   holding all N `policy.applied` events of that version (its store, polled every 50 ms);
   also when the workstations applied it (their own monotonic clock, the same machine's).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import ssl
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the end-to-end tests' floor and collector process

import httpx  # noqa: E402
import yaml  # noqa: E402
from collector_process import CollectorProcess  # noqa: E402
from policy_floor import (  # noqa: E402
    BOOTSTRAP_RULES,
    Events,
    PolicyAdmin,
    Workstation,
    wait_until,
)
from umockdev_bus import KEYBOARD, STICK  # noqa: E402

from floor_agent.audit.agent import AuditAgent, enroll  # noqa: E402
from floor_agent.audit.collector_link import CollectorLink  # noqa: E402
from floor_agent.audit.policy_key import read_pinned  # noqa: E402
from floor_agent.roles.config import WorkstationConfig, load_config  # noqa: E402
from floor_agent.store.interface import EventQuery  # noqa: E402
from floor_agent.ws_policy.apply import PolicyEnforcer  # noqa: E402
from floor_agent.ws_policy.cache import PolicyCache  # noqa: E402
from floor_agent.ws_policy.sync import PolicyClient, PolicySync  # noqa: E402


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def figure(name: str, value: Any, details: str = "") -> None:
    print(f"{name}: {value}" + (f" ({details})" if details else ""), flush=True)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def spread(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": round(percentile(values, 50), 3),
            "p95": round(percentile(values, 95), 3), "max": round(max(values), 3),
            "mean": round(statistics.fmean(values), 3)}


# -- 1. approval to authorized ---------------------------------------------------------------

def approvals(collector: CollectorProcess, admin: PolicyAdmin, rounds: int) -> dict[str, Any]:
    events = Events(collector)
    admin.set_group("bench-approve", BOOTSTRAP_RULES)
    station = Workstation(collector, "ws-approve", (STICK, KEYBOARD))
    version = admin.assign("ws-approve", "bench-approve")
    station.start()
    try:
        events.applied("ws-approve", version, 60)
        station.wait_authorized(STICK, "0", 60)
        seconds: list[float] = []
        posts: list[float] = []
        seen: set[int] = set()
        for n in range(rounds):
            blocked = wait_until("a new usb.blocked of the stick", lambda: next(
                (e for e in events.of("ws-approve", "usb.blocked", 20)
                 if e["id"] not in seen and STICK.serial.decode() in str(e["data"])), None),
                60, 0.05)
            seen.add(blocked["id"])
            assert station.authorized(STICK) == "0"
            start = time.monotonic()
            item = admin.approve(blocked["id"], "agent:ws-approve")
            posted = time.monotonic()
            while station.authorized(STICK) != "1":
                if time.monotonic() - start > 60:
                    raise AssertionError(f"round {n}: the stick not authorized in 60 s")
                time.sleep(0.002)
            seconds.append(time.monotonic() - start)
            posts.append(posted - start)
            say(f"approval {n + 1}/{rounds}: {seconds[-1] * 1000:.0f} ms "
                f"(POST {posts[-1] * 1000:.0f} ms)")
            admin.call("POST", f"/api/v1/policy/exceptions/{item['exception']['exception_id']}"
                       "/withdraw", {"reason": "bench round over"})
            station.wait_authorized(STICK, "0", 60)
        return {"seconds": spread(seconds), "post_seconds": spread(posts)}
    finally:
        station.stop()


# -- 1b. approval clicked in the dashboard to authorized ------------------------------------------

def click_approvals(collector: CollectorProcess, admin: PolicyAdmin, rounds: int
                    ) -> dict[str, Any]:
    from browser import chromium, new_context
    from dashboard_clients import PASSWORD, add_user
    from dashboard_fixtures import log_in

    events = Events(collector)
    admin.set_group("bench-click", BOOTSTRAP_RULES)
    station = Workstation(collector, "ws-click", (STICK, KEYBOARD))
    version = admin.assign("ws-click", "bench-click")
    add_user(collector, "bench-admin", "admin")
    station.start()
    try:
        events.applied("ws-click", version, 60)
        station.wait_authorized(STICK, "0", 60)
        seconds: list[float] = []
        pages: list[float] = []
        seen: set[int] = set()
        with chromium(collector.files.server_cert) as browser:
            context = new_context(browser)
            page = context.new_page()
            log_in(page, collector.url, "bench-admin", PASSWORD)
            for n in range(rounds):
                blocked = wait_until("a new usb.blocked of the stick", lambda: next(
                    (e for e in events.of("ws-click", "usb.blocked", 20)
                     if e["id"] not in seen and STICK.serial.decode() in str(e["data"])),
                    None), 60, 0.05)
                seen.add(blocked["id"])
                section = (f"[data-testid=blocked-device][data-agent=ws-click]"
                           f"[data-event='{blocked['id']}']")

                def listed(section: str = section) -> bool:
                    page.goto(f"{collector.url}/policy/blocked")
                    return page.locator(section).count() == 1

                wait_until(f"event {blocked['id']} listed on /policy/blocked", listed, 60, 0.2)
                device = page.locator(section)
                device.locator("select[name=scope]").select_option("agent")
                device.locator("input[name=reason]").fill(f"bench round {n + 1}")
                button = device.get_by_role("button", name="Approve")
                assert station.authorized(STICK) == "0"
                start = time.monotonic()
                button.click(no_wait_after=True)
                while station.authorized(STICK) != "1":
                    if time.monotonic() - start > 60:
                        raise AssertionError(f"round {n}: the stick not authorized in 60 s")
                    time.sleep(0.002)
                seconds.append(time.monotonic() - start)
                page.get_by_test_id("approved-version").wait_for(timeout=30_000)
                pages.append(time.monotonic() - start)
                say(f"click {n + 1}/{rounds}: {seconds[-1] * 1000:.0f} ms "
                    f"(answer page shown by {pages[-1] * 1000:.0f} ms)")
                [item] = admin.call("GET", "/api/v1/policy/exceptions?active=true")[
                    "exceptions"]
                admin.call("POST", f"/api/v1/policy/exceptions/{item['exception_id']}"
                           "/withdraw", {"reason": "bench round over"})
                station.wait_authorized(STICK, "0", 60)
            context.close()
        return {"seconds": spread(seconds), "page_seconds": spread(pages)}
    finally:
        station.stop()


# -- 2. rollout to N workstations --------------------------------------------------------------

class SimulatedGuard:
    """Takes the rules as the USB guard's replace_rules would (no sysfs)."""

    def __init__(self) -> None:
        self.rules: Any = None

    def replace_rules(self, rules: Any) -> None:
        self.rules = rules


def bound_client(url: str, ca: Path, timeout: float, address: str) -> httpx.Client:
    """forwarder.pinned_client, from a loopback address of this workstation's own."""
    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return httpx.Client(base_url=url, verify=context, timeout=timeout,
                        headers={"content-type": "application/json"},
                        transport=httpx.HTTPTransport(verify=context, local_address=address))


def worker(configs: list[tuple[str, str]], pipe: Any) -> None:
    """Run these workstations' audit agents and policy syncs until told to stop; report each
    version each applies (its monotonic time) over `pipe`."""
    import logging

    logging.basicConfig(level=logging.ERROR)
    lock = threading.Lock()
    running = []
    for path, address in configs:
        config = load_config(path, "workstation")
        assert isinstance(config, WorkstationConfig)
        audit = config.audit
        agent = AuditAgent(audit, "workstation")
        agent.link.close()
        agent.link = CollectorLink([bound_client(audit.collector_url[0], audit.ca_path(),
                                                 audit.request_timeout_seconds, address)])
        agent.forwarder.link = agent.link
        agent.start()
        pinned = read_pinned(audit.state_dir)
        assert pinned is not None, f"{audit.state_dir}: no policy key pinned at enrollment"
        key, text = pinned

        def emit(kind: str, subject: str, severity: str = "info", *,
                 _agent: AuditAgent = agent, **data: Any) -> Any:
            event = _agent.emit(kind, subject, severity, **data)
            if kind == "policy.applied" and data.get("source") == "collector":
                with lock:
                    pipe.send((_agent.agent_id, data["version"], time.monotonic()))
            return event

        enforcer = PolicyEnforcer(agent.agent_id, emit, PolicyCache(audit.state_dir), key, None)
        enforcer.usb = SimulatedGuard()
        client = PolicyClient(bound_client(audit.collector_url[0], audit.ca_path(),
                                           audit.request_timeout_seconds, address),
                              agent.key, agent.agent_id)
        sync = PolicySync(client, enforcer, emit, config.policy, audit.state_dir, text)
        sync.start()
        running.append((agent, sync))
    pipe.send(("ready", len(running), time.monotonic()))
    pipe.recv()  # stop
    for _, sync in running:  # all at once: each may hold a long poll
        sync.stop_event.set()
        sync.client.close()
    for _, sync in running:
        sync.stop(timeout=5)
    for agent, _ in running:
        agent.stop(drain_seconds=2)
    pipe.send(("stopped", len(running), time.monotonic()))


def applied_count(collector: CollectorProcess, version: int) -> int:
    store = collector.store()
    try:
        page = store.query_events(EventQuery(kind="policy.applied", limit=100_000))
    finally:
        store.close()
    return len({e["agent_id"] for e in page.events if e["data"].get("version") == version
                and e["data"].get("source") == "collector"})


def rollout(collector: CollectorProcess, admin: PolicyAdmin, count: int, processes: int,
            rounds: int) -> dict[str, Any]:
    say(f"enrolling {count} workstations")
    configs: list[tuple[str, str]] = []
    for n in range(count):
        name = f"ws-{n:03d}"
        config = collector.agent_config(name, heartbeat_seconds=60.0)
        enroll(config.audit, "workstation", collector.token(), None)
        path = collector.root / f"{name}.yaml"
        body = yaml.safe_load(path.read_text())
        body["policy"] = {"enabled": True, "watch_wait_seconds": 25,
                          "backoff_initial_seconds": 0.5, "backoff_max_seconds": 5}
        path.write_text(yaml.safe_dump(body))
        configs.append((str(path), f"127.0.1.{n + 1}" if n < 254 else f"127.0.2.{n - 253}"))
    first = admin.set_group("default", BOOTSTRAP_RULES, reason="bench: the floor's rules")
    context = multiprocessing.get_context("spawn")
    pipes, procs = [], []
    for p in range(processes):
        ours, theirs = context.Pipe()
        proc = context.Process(target=worker, args=(configs[p::processes], theirs))
        proc.start()
        pipes.append(ours)
        procs.append(proc)
    applied: dict[int, dict[str, float]] = {}
    stop = threading.Event()

    def listen(pipe: Any) -> None:
        while not stop.is_set():
            if pipe.poll(0.2):
                try:
                    agent_id, version, at = pipe.recv()
                except EOFError:
                    return
                if agent_id in ("ready", "stopped"):
                    continue
                applied.setdefault(version, {})[agent_id] = at

    listeners = [threading.Thread(target=listen, args=(pipe,), daemon=True) for pipe in pipes]
    for thread in listeners:
        thread.start()
    try:
        say(f"waiting for version {first} on all {count} (the first pull)")
        start = time.monotonic()
        wait_until(f"all {count} applied version {first}",
                   lambda: applied_count(collector, first) >= count, 300, 0.5)
        say(f"  first pull: {time.monotonic() - start:.1f} s")
        time.sleep(3)  # every workstation back in its long poll
        stored: list[float] = []
        applied_p95: list[float] = []
        applied_max: list[float] = []
        for n in range(rounds):
            start = time.monotonic()
            version = admin.set_group("default", f"# rollout {n + 1}\n" + BOOTSTRAP_RULES,
                                      reason=f"bench rollout {n + 1}")
            while applied_count(collector, version) < count:
                if time.monotonic() - start > 300:
                    raise AssertionError(f"rollout {n + 1}: not all {count} within 300 s")
                time.sleep(0.05)
            stored.append(time.monotonic() - start)
            times = [at - start for at in applied.get(version, {}).values()]
            applied_p95.append(percentile(times, 95))
            applied_max.append(max(times))
            say(f"rollout {n + 1}/{rounds}: all {count} stored at the collector after "
                f"{stored[-1]:.2f} s; applied on the workstations p50 "
                f"{percentile(times, 50):.2f} s, p95 {applied_p95[-1]:.2f} s, "
                f"max {applied_max[-1]:.2f} s")
            time.sleep(3)
        return {"all_stored_seconds": spread(stored),
                "applied_p95_seconds": spread(applied_p95),
                "applied_max_seconds": spread(applied_max), "workstations": count,
                "processes": processes}
    finally:
        for pipe in pipes:
            pipe.send("stop")
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join()
        stop.set()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--approvals", type=int, default=25)
    parser.add_argument("--workstations", type=int, default=200)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--rollouts", type=int, default=5)
    parser.add_argument("--click-approvals", type=int, default=0,
                        help="rounds approved by clicking in the dashboard (Chromium)")
    parser.add_argument("--skip-approvals", action="store_true")
    parser.add_argument("--skip-rollout", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="floor-bench-policy-"))
    # the collector's shipped limits (512 connections, 64 per address), expiry looked at
    # every 5 s
    collector = CollectorProcess(root, policy={"expiry_check_seconds": 5})
    summary: dict[str, Any] = {}
    try:
        collector.start()
        admin = PolicyAdmin(collector)
        if not args.skip_approvals:
            result = approvals(collector, admin, args.approvals)
            summary["approval"] = result
            s = result["seconds"]
            figure("policy_approval_p50_s", s["p50"])
            figure("policy_approval_p95_s", s["p95"],
                   f"target <= 3 s: {'met' if s['p95'] <= 3 else 'NOT met'}")
            figure("policy_approval_max_s", s["max"], f"n={s['n']}")
            figure("policy_approval_post_p50_s", result["post_seconds"]["p50"])
        if args.click_approvals:
            result = click_approvals(collector, admin, args.click_approvals)
            summary["click_approval"] = result
            s = result["seconds"]
            figure("policy_approval_click_p50_s", s["p50"])
            figure("policy_approval_click_p95_s", s["p95"],
                   f"target <= 3 s: {'met' if s['p95'] <= 3 else 'NOT met'}")
            figure("policy_approval_click_max_s", s["max"], f"n={s['n']}")
            figure("policy_approval_click_page_p50_s", result["page_seconds"]["p50"])
        if not args.skip_rollout:
            result = rollout(collector, admin, args.workstations, args.processes,
                             args.rollouts)
            summary["rollout"] = result
            for name in ("all_stored_seconds", "applied_p95_seconds", "applied_max_seconds"):
                s = result[name]
                figure(f"policy_rollout_{name[:-8]}_s", f"p50 {s['p50']}, max {s['max']}",
                       f"over {s['n']} rollouts to {result['workstations']} workstations")
        print(json.dumps(summary), flush=True)
        missed = any(name in summary and summary[name]["seconds"]["p95"] > 3
                     for name in ("approval", "click_approval"))
        return 1 if missed else 0
    finally:
        collector.stop()
        if args.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
