"""What the USB guard (usb_guard/) records."""

from __future__ import annotations

from enum import StrEnum

from floor_agent.protocol.kinds.topic import Topic


class UsbKind(StrEnum):
    ALLOWED = "usb.allowed"
    BLOCKED = "usb.blocked"
    REJECTED = "usb.rejected"
    PARTIAL = "usb.partial"
    ENFORCEMENT_FAILED = "usb.enforcement_failed"
    LOCKED_DOWN = "usb.locked_down"
    LOCKDOWN_FAILED = "usb.lockdown_failed"
    RULES_INVALID = "usb.rules_invalid"
    MANUAL_ALLOW = "usb.manual_allow"
    MANUAL_BLOCK = "usb.manual_block"


USB_LOCK = Topic("usb.lock")
# the kinds that set a workstation's current state, and the state they set
STATES: dict[UsbKind, Topic] = {
    UsbKind.LOCKED_DOWN: USB_LOCK,
    UsbKind.LOCKDOWN_FAILED: USB_LOCK,
    UsbKind.RULES_INVALID: USB_LOCK,
}
