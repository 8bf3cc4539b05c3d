"""`/cameras/tiles`: the camera tiles alone (HTML), for the open cameras page to swap in."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from floor_agent.dashboard import camera_tiles
from floor_agent.dashboard.auth import User, require
from floor_agent.dashboard.context import dashboard_of
from floor_agent.dashboard.render import page

router = APIRouter()


@router.get("/cameras/tiles")
def tiles_fragment(request: Request, user: Annotated[User, Depends(require("read"))]
                   ) -> Response:
    return page(request, "camera_tiles.html", user,
                tiles=camera_tiles.tiles(dashboard_of(request)))
