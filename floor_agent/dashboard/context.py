"""What every dashboard route needs, in one object on app.state.dashboard."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from fastapi import Request
from fastapi.templating import Jinja2Templates

from floor_agent.collector.config import DashboardSettings
from floor_agent.collector.self_audit import OwnAudit
from floor_agent.common.clock import utc_now
from floor_agent.dashboard import overview
from floor_agent.dashboard.live import Broadcaster
from floor_agent.dashboard.login_limits import AddressThrottle, HashAdmission, LoginLimits
from floor_agent.dashboard.timefmt import short_time
from floor_agent.dashboard.view_log import ViewThrottle
from floor_agent.store.interface import Store

DASHBOARD_DIR = Path(__file__).resolve().parent  # templates/ and static/ beside the modules


def make_templates() -> Jinja2Templates:
    """The dashboard's templates, with the helpers they share (compact times, wall tiles)."""
    templates = Jinja2Templates(directory=str(DASHBOARD_DIR / "templates"))
    templates.env.filters["short_time"] = short_time
    templates.env.globals.update(worst=overview.worst, problems=overview.problems)
    return templates


@dataclass
class Dashboard:
    store: Store
    settings: DashboardSettings
    own_audit: OwnAudit
    broadcaster: Broadcaster
    stale_seconds: int = 180
    clock: Callable[[], datetime] = utc_now
    templates: Jinja2Templates = field(default_factory=make_templates)
    # snapshot views on the own trail: a refreshing tile is not recorded every refresh
    views: ViewThrottle = field(default_factory=ViewThrottle)
    # failed logins per source address and the hashing admission (login_limits.py)
    limits: LoginLimits = field(init=False)

    def __post_init__(self) -> None:
        self.limits = LoginLimits(
            AddressThrottle(self.settings.address_failures, self.settings.address_minutes * 60),
            HashAdmission(), self.settings.login_wait_seconds)


def dashboard_of(request: Request) -> Dashboard:
    return request.app.state.dashboard  # type: ignore[no-any-return]
