"""The udev adapter: USB hot-plug events and the devices already present at start.

Thin on purpose: it says what happened to which device, decisions live in policy.py. Start
order matters for the zero window: create `UdevMonitor` (it listens from that moment, events
queue in its socket), then lock down and evaluate `present_devices`, then `start` the thread.
A device plugged in between is then seen twice (present and added), never missed, so whatever
acts on these events must be idempotent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

import pyudev

ACTIONS = frozenset({"add", "remove", "bind", "change"})
DEVICE_TYPES = ("usb_device", "usb_interface")
POLL_SECONDS = 0.2  # how long shutdown may wait for the thread
RECEIVE_BUFFER = 8 * 1024 * 1024  # a burst (hub with many devices) must not overflow the socket

log = logging.getLogger(__name__)

Handler = Callable[[str, pyudev.Device], None]


class UdevMonitor:
    """USB device and interface events from udev, as (action, pyudev.Device)."""

    def __init__(self, context: pyudev.Context, source: str = "udev") -> None:
        self._monitor = pyudev.Monitor.from_netlink(context, source=source)
        for device_type in DEVICE_TYPES:  # libudev ORs the filters
            self._monitor.filter_by(subsystem="usb", device_type=device_type)
        try:
            self._monitor.set_receive_buffer_size(RECEIVE_BUFFER)
        except (OSError, ValueError) as e:  # best effort: needs CAP_NET_ADMIN
            log.warning("udev monitor: could not enlarge the receive buffer: %s", e)
        self._monitor.start()  # listen now, before present devices are enumerated
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.error: BaseException | None = None  # why the thread stopped, if not by shutdown

    def events(self, shutdown: threading.Event) -> Iterator[tuple[str, pyudev.Device]]:
        """Yield events until `shutdown` is set or stop() is called (checked every
        POLL_SECONDS). Raises OSError
        when the socket fails, e.g. ENOBUFS: events were lost."""
        while not shutdown.is_set() and not self._stopped.is_set():
            device = self._monitor.poll(timeout=POLL_SECONDS)
            if device is None:
                continue
            action = device.action
            if action in ACTIONS and device.device_type in DEVICE_TYPES:
                yield action, device

    def start(self, handler: Handler, shutdown: threading.Event) -> threading.Thread:
        """Run `handler` for every event in a thread until `shutdown` is set. A handler that
        raises is logged and the loop goes on: the device it was about stays as the kernel
        left it (unauthorized after lock down), which is the fail-closed outcome. If the event
        source itself fails (events lost), the thread sets `shutdown` and keeps the error in
        `error`: the agent stops and its restart re-evaluates the present devices, instead of
        running on deaf."""
        if self._thread is not None:
            raise RuntimeError("UdevMonitor already started")

        def run() -> None:
            try:
                for action, device in self.events(shutdown):
                    try:
                        handler(action, device)
                    except Exception:
                        log.exception("udev monitor: handler failed on %s %s", action,
                                      device.sys_path)
            except Exception as e:
                self.error = e
                log.exception("udev monitor: event source failed, shutting down")
                shutdown.set()

        self._thread = threading.Thread(target=run, name="usb-udev-monitor", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float = 5.0) -> None:
        """End the event thread (within POLL_SECONDS and the event being handled)."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout)


def _depth_then_path(device: pyudev.Device) -> tuple[int, str]:
    path = device.device_path.rstrip("/")
    return path.count("/"), path


def present_devices(context: pyudev.Context) -> list[pyudev.Device]:
    """USB devices (not interfaces) present now, root hubs first and every hub before the
    devices behind it, so a hub's decision is made before its children's."""
    devices = [d for d in context.list_devices(subsystem="usb") if d.device_type == "usb_device"]
    return sorted(devices, key=_depth_then_path)
