"""The collector's own audit trail (collector/, report/, `collector verify`)."""

from __future__ import annotations

from enum import StrEnum


class CollectorKind(StrEnum):
    BACKUP = "collector.backup"
    RESTORE = "collector.restore"
    SHUT_OUT = "collector.shut_out"
    ANCHOR_ENDORSE = "collector.anchor.endorse"
    # a second collector joined the site (collector/join.py): its request signed on the
    # collector holding the CA (step "signed"), its bundle installed on the new one ("installed")
    JOINED = "collector.joined"
    ALERT_ACKNOWLEDGED = "alert.acknowledged"
    # notifications (collector/notify.py): an alert unacknowledged too long, handed on; each
    # notification handed to its receiver, or an attempt that failed (it stays in the outbox)
    ALERT_ESCALATED = "alert.escalated"
    NOTIFICATION_SENT = "collector.notification_sent"
    NOTIFICATION_FAILED = "collector.notification_failed"
    APIKEY_CREATED = "apikey.created"
    APIKEY_REVOKED = "apikey.revoked"
    INTEGRITY_VERIFIED = "integrity.verified"
    REPORT_GENERATED = "report.generated"
    # central workstation policy (collector/policy_admin.py): a group's rules or allowlist
    # set, a workstation moved to a group, a device exception approved, expired or withdrawn
    POLICY_CHANGED = "policy.changed"
    POLICY_ASSIGNED = "policy.assigned"
    POLICY_EXCEPTION_APPROVED = "policy.exception_approved"
    POLICY_EXCEPTION_EXPIRED = "policy.exception_expired"
    POLICY_EXCEPTION_WITHDRAWN = "policy.exception_withdrawn"
