"""What the GDPR image deletion (retention/) records."""

from __future__ import annotations

from enum import StrEnum


class RetentionKind(StrEnum):
    SWEEP_STARTED = "retention.sweep_started"
    RECEIPT = "retention.receipt"
    REFUSED = "retention.refused"
    RESIDUE = "retention.residue"
    SWEEP_FAILED = "retention.sweep_failed"
