"""The simulated USB devices of floor_agent.simulated.usb_devices, under the name tests import."""

from floor_agent.simulated.usb_devices import *  # noqa: F403
from floor_agent.simulated.usb_devices import (  # noqa: F401  (names starting with _ and constants)
    HCD,
    HUB,
    HUB_INTERFACE,
    HUB_PORTS,
)
from floor_agent.usb_guard.device import UsbDevice, device_from_attributes  # noqa: E402

# Printed by `usbguard generate-policy` (Debian usbguard 1.1.2) for this bus's root hub.
ROOT_HUB_HASH = "eS4qZavZPoQWZl6KcqYoHFr4MU8JAU0oho6oYZvtC6k="


def device_of(spec: UsbSpec, parent_hash: str = ROOT_HUB_HASH) -> UsbDevice:  # noqa: F405
    """The identity the pure code derives for a catalogue device (hubs above it included)."""
    if spec.hub is not None:
        parent_hash = device_of(spec.hub, parent_hash).hash
    return device_from_attributes(attributes(spec), descriptors(spec),  # noqa: F405
                                  parent_hash, sys_path="/sys" + spec.devpath,
                                  interface_attrs=interface_attributes(spec))  # noqa: F405
