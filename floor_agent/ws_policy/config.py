"""The workstation's policy section: whether the collector's signed policy is enforced, and how
the workstation keeps up with it."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator

from floor_agent.config.base import StrictFloat, StrictModel


class PolicyConfig(StrictModel):
    """The central policy: off, the local rules file and netlock section are the policy; on,
    they are only the bootstrap, enforced until a verified policy is (and again if the cached
    one is refused)."""

    enabled: Annotated[bool, Field(strict=True)] = False
    # One long poll on the collector's policy watch; a new version arrives within a second of
    # its publication while one is held. Keep below proxies' idle limits.
    watch_wait_seconds: Annotated[StrictFloat, Field(ge=1, le=300)] = 25
    # Retry delay after a failed pull, growing per failure up to backoff_max_seconds.
    backoff_initial_seconds: Annotated[StrictFloat, Field(gt=0, le=3600)] = 2
    backoff_max_seconds: Annotated[StrictFloat, Field(gt=0, le=3600)] = 300

    @field_validator("backoff_max_seconds")
    @classmethod
    def _max_not_below_initial(cls, value: float, info: ValidationInfo) -> float:
        initial = info.data.get("backoff_initial_seconds")
        if initial is not None and value < initial:
            raise ValueError("must be >= backoff_initial_seconds")
        return value
