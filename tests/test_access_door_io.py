"""access door I/O: the simulator twin, the door state machine driving it, and the proof that a
controller killed with SIGKILL leaves a fail-secure door locked (a fail-safe one open)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from floor_agent.access import door
from floor_agent.access.door import DoorParams, DoorStep
from floor_agent.access.door_io import (
    POSITION,
    REX,
    DoorIoError,
    InputChange,
    SimulatedDoorIo,
)
from floor_agent.simulated.door import SimulatedRelay

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
WAIT = 10.0  # generous bound for a child process to start or die; not a timing target


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[SimulatedRelay]:
    r = SimulatedRelay(tmp_path / "relay.sock")
    yield r
    r.close()


def apply(io: SimulatedDoorIo, step: DoorStep) -> DoorStep:
    for command in step.commands:
        io.set_lock(command.unlocked)
    return step


def test_relay_starts_unpowered_and_follows_set_lock() -> None:
    io = SimulatedDoorIo("secure")
    assert not io.energised and not io.unlocked
    io.set_lock(True)
    assert io.energised and io.unlocked
    io.set_lock(False)
    assert [on for _, on in io.relay_history] == [False, True, False]
    io.close()


def test_fail_safe_twin_holds_power_to_stay_locked() -> None:
    io = SimulatedDoorIo("safe")
    assert io.energised and not io.unlocked  # constructed locked: coil powered
    io.set_lock(True)
    assert not io.energised and io.unlocked
    io.set_lock(False)
    io.close()
    assert not io.energised and io.unlocked  # stopped controller: escape route open


def test_close_leaves_a_fail_secure_door_locked() -> None:
    io = SimulatedDoorIo("secure")
    io.set_lock(True)
    io.close()
    assert not io.energised and not io.unlocked


def test_inputs_arrive_in_order_and_repeats_are_not_changes() -> None:
    io = SimulatedDoorIo("secure")
    io.open_door()
    io.open_door()
    io.close_door()
    io.press_rex()
    seen = []
    while (change := io.next_change(0)) is not None:
        seen.append((change.kind, change.value))
    assert seen == [(POSITION, True), (POSITION, False), (REX, True), (REX, False)]
    assert io.next_change(0.01) is None
    assert not io.read_position() and not io.read_rex()
    io.close()


def test_unknown_fail_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="fail_mode"):
        SimulatedDoorIo("whatever")


def test_state_machine_drives_the_twin_through_a_visit_and_a_forced_entry() -> None:
    params = DoorParams(unlock_seconds=5, held_open_seconds=30)
    io = SimulatedDoorIo(params.fail_mode)
    state = apply(io, door.start("d1", params, T0)).state
    state = apply(io, door.grant(state, params, T0)).state
    assert io.unlocked
    io.open_door()
    io.close_door()
    events: list[str] = []
    now = T0
    while (change := io.next_change(0)) is not None:
        now += timedelta(seconds=1)
        assert isinstance(change, InputChange)
        step = apply(io, door.position(state, params, now, change.value))
        state = step.state
        events += [e.kind for e in step.events]
    assert events == ["door.opened", "door.closed", "door.relocked"]
    assert not io.unlocked
    io.open_door()  # nobody asked: forced
    change = io.next_change(0)
    assert change is not None
    step = apply(io, door.position(state, params, now, change.value))
    assert [e.kind for e in step.events] == ["door.opened", "door.forced"]
    assert not io.unlocked
    io.close()


def test_relay_link_carries_the_coil_state(relay: SimulatedRelay) -> None:
    io = SimulatedDoorIo("secure", relay_path=relay.path)
    assert relay.wait_for(False, WAIT, connected=True)
    io.set_lock(True)
    assert relay.wait_for(True, WAIT)
    io.set_lock(False)
    assert relay.wait_for(False, WAIT)
    io.set_lock(True)
    assert relay.wait_for(True, WAIT)
    io.close()  # an orderly stop drops the power too
    assert relay.wait_for(False, WAIT, connected=False)
    assert [on for _, on in relay.history] == [False, True, False, True, False]
    assert relay.garbage == []


def test_a_broken_relay_link_is_an_error_to_drive_and_none_to_close(
        relay: SimulatedRelay) -> None:
    """Driving the lock over a cut link fails loudly; stopping the door does not: the relay
    lost the link, so its coil is unpowered already (a stop that raised left the rest of the
    agent's shutdown undone)."""
    io = SimulatedDoorIo("secure", relay_path=relay.path)
    assert relay.wait_for(False, WAIT, connected=True)
    io.set_lock(True)
    assert relay.wait_for(True, WAIT)
    relay.close()  # the cable pulled
    assert relay.wait_for(False, WAIT, connected=False)
    with pytest.raises(DoorIoError, match="relay link: Broken pipe"):
        io.set_lock(False)
    io.close()
    assert relay.history[-1][1] is False


def test_relay_link_to_nowhere_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DoorIoError, match="connect relay link .*nowhere.sock"):
        SimulatedDoorIo("secure", relay_path=tmp_path / "nowhere.sock")


def test_garbage_on_the_relay_link_never_powers_the_coil(relay: SimulatedRelay) -> None:
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(os.fspath(relay.path))
        s.sendall(b"\x00\xffON2")
        s.sendall(b"0")
        assert relay.wait_for(False, WAIT, connected=True)
    assert relay.wait_for(False, WAIT, connected=False)
    assert not any(on for _, on in relay.history)
    assert "byte 0x4f on the relay link" in relay.garbage


# A controller process: takes the door over, grants, and keeps it unlocked (fail-secure) or
# locked (fail-safe) while it lives; it says "ready" once the relay command is sent.
CONTROLLER = textwrap.dedent("""
    import sys, time
    from datetime import UTC, datetime
    from pathlib import Path
    from floor_agent.access import door
    from floor_agent.access.door_io import SimulatedDoorIo

    fail_mode, relay_path, action = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    params = door.DoorParams(unlock_seconds=300, held_open_seconds=30, fail_mode=fail_mode)
    io = SimulatedDoorIo(fail_mode, relay_path=relay_path)
    now = datetime.now(UTC)
    step = door.start("d1", params, now)
    if action == "grant":
        step = door.grant(step.state, params, now)
    for command in step.commands:
        io.set_lock(command.unlocked)
    print("ready", flush=True)
    time.sleep(600)
""")


@pytest.mark.parametrize(("fail_mode", "action", "powered_while_alive", "unlocked_after"), [
    ("secure", "grant", True, False),  # unlocked by a grant, killed: locked
    ("safe", "start", True, True),  # locked (coil held), killed: the escape route opens
])
def test_sigkill_controller_drops_the_relay_to_its_unpowered_state(
        relay: SimulatedRelay, fail_mode: str, action: str, powered_while_alive: bool,
        unlocked_after: bool) -> None:
    root = Path(__file__).resolve().parents[1]
    child = subprocess.Popen(
        [sys.executable, "-c", CONTROLLER, fail_mode, os.fspath(relay.path), action],
        stdout=subprocess.PIPE, text=True, cwd=root,
        env=dict(os.environ, PYTHONPATH=os.fspath(root)))
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        assert relay.wait_for(powered_while_alive, WAIT, connected=True)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(WAIT) == -signal.SIGKILL
        # no cleanup code ran in the child: the kernel closed its end and the coil lost power
        assert relay.wait_for(False, WAIT, connected=False)
        assert door.unlocked_when_unpowered(fail_mode) is unlocked_after
        assert relay.history[-1][1] is False
        assert relay.history[-2][1] is True
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()


def test_the_simulated_door_sends_its_switches_over_the_link(relay: SimulatedRelay) -> None:
    """A controller in another process sees the door's switches as it would see GPIO edges."""
    io = SimulatedDoorIo("secure", relay_path=relay.path)
    assert relay.wait_for(False, WAIT, connected=True)
    relay.open_door()
    relay.press_rex()
    relay.close_door()
    seen = [io.next_change(WAIT) for _ in range(4)]
    assert [(c.kind, c.value) for c in seen if c is not None] == [
        ("position", True), ("rex", True), ("rex", False), ("position", False)]
    io.close()
    assert relay.wait_for(False, WAIT, connected=False)
    with pytest.raises(DoorIoError, match="no controller on the link"):
        relay.open_door()
