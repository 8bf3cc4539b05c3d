"""The collector's own audit trail (collector/, report/, `collector verify`)."""

from __future__ import annotations

from enum import StrEnum


class CollectorKind(StrEnum):
    BACKUP = "collector.backup"
    RESTORE = "collector.restore"
    SHUT_OUT = "collector.shut_out"
    ANCHOR_ENDORSE = "collector.anchor.endorse"
    ALERT_ACKNOWLEDGED = "alert.acknowledged"
    APIKEY_CREATED = "apikey.created"
    APIKEY_REVOKED = "apikey.revoked"
    INTEGRITY_VERIFIED = "integrity.verified"
    REPORT_GENERATED = "report.generated"
