"""The simulated USB devices of floor_agent.usb_guard.sim_bus, under the name tests import."""

from floor_agent.usb_guard.sim_bus import *  # noqa: F403
from floor_agent.usb_guard.sim_bus import (  # noqa: F401  (names starting with _ and constants)
    HCD,
    HUB,
    HUB_INTERFACE,
    HUB_PORTS,
)
