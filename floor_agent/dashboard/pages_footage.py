"""Footage behind an alert (`/footage/...`): the clip of the cameras covering a door or camera
alert, from the central SFTP copy, checked against the segment chain before the browser gets a
byte, and every view on the collector's own trail with who and why.

  GET  /footage/alert/{id}             the covering cameras, the range, a form asking why
  POST /footage/alert/{id}             camera + reason (required): fetch, verify, remux,
                                       record the view, then 303 to the clip's page
  GET  /footage/clips/{clip}           the player (H.264) or the download (H.265 and others)
  GET  /footage/clips/{clip}/video.mp4 the clip, with HTTP range requests

Only a role with the `footage` permission watches (users.PERMISSIONS: viewer and admin; an
auditor reads the footage log but does not watch). A clip is kept for `clip_minutes`, for the
user who asked for it only: another user gives their own reason for their own view.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, RedirectResponse, Response

from floor_agent.collector import footage
from floor_agent.collector.footage_config import FootageCamera, FootageSettings
from floor_agent.dashboard.auth import User, check_csrf, require
from floor_agent.dashboard.context import Dashboard, dashboard_of
from floor_agent.dashboard.paths import RowId
from floor_agent.dashboard.render import page
from floor_agent.protocol.event import utc_timestamp
from floor_agent.protocol.kinds.cctv import CctvKind
from floor_agent.protocol.kinds.dashboard import DashboardKind
from floor_agent.store.interface import EventQuery

router = APIRouter()
PERMISSION = "footage"
ClipId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_-]{22,64}$")]
REASON_MIN = 3
LEAD_SECONDS = 5.0  # the player starts this long before the alert's moment
LINKS_AT_MOST = 200  # alerts on one /alerts page looked up for a footage link
EVENTS_AT_MOST = 20_000  # cctv.segment events of one camera box read for one clip
PAGE = 500
# clips made at once by this process (each reads over SFTP and remuxes: I/O and a little CPU)
MAKING = threading.BoundedSemaphore(2)
H265_NOTE = ("This camera records H.265 (HEVC). Chromium as shipped by Debian cannot decode "
             "H.265 (Chrome and Edge only with the system's hardware decoder, Firefox not at "
             "all, Safari can): download the clip and open it in a player such as VLC or mpv. "
             "Its bytes are the camera's, verified like any clip.")


def settings_of(dash: Dashboard) -> FootageSettings:
    return dash.settings.footage


def _alert_coverage(dash: Dashboard, alert: dict[str, Any]) -> footage.Coverage | None:
    """The alert's event, and the cameras covering it (None: no clip for this alert)."""
    settings = settings_of(dash)
    kind = str(alert["kind"])
    if not settings.enabled or alert["agent_id"] is None or alert["seq"] is None or not (
            kind in footage.DOOR_KINDS or kind.startswith("cctv.")):
        return None
    found = dash.store.chain_events(alert["agent_id"], alert["seq"], alert["seq"])
    if not found:
        return None
    event = found[0][0]
    data = event["data"] if isinstance(event.get("data"), dict) else {}
    return footage.coverage(settings, str(event["kind"]), alert["agent_id"], data,
                            str(event["ts"]))


def footage_links(request: Request, user: User, alerts: list[dict[str, Any]]) -> dict[int, str]:
    """alert id -> its footage page, for the alerts a clip covers (the /alerts page's links)."""
    dash = dashboard_of(request)
    if not user.may(PERMISSION) or not settings_of(dash).enabled:
        return {}
    links: dict[int, str] = {}
    looked = 0
    for alert in alerts:
        kind = str(alert["kind"])
        if not (kind in footage.DOOR_KINDS or kind.startswith("cctv.")):
            continue
        looked += 1
        if looked > LINKS_AT_MOST:
            break
        if _alert_coverage(dash, alert) is not None:
            links[int(alert["id"])] = f"/footage/alert/{alert['id']}"
    return links


def _not_found(request: Request, user: User, message: str) -> Response:
    return page(request, "error.html", user, 404, title="No footage", message=message)


def _form(request: Request, user: User, alert: dict[str, Any], cover: footage.Coverage,
          status: int = 200, error: str | None = None, reason: str = "",
          camera: str = "") -> Response:
    return page(request, "footage_alert.html", user, status, alert=alert, cover=cover,
                error=error, reason=reason, camera=camera,
                before=settings_of(dashboard_of(request)).before_seconds,
                after=settings_of(dashboard_of(request)).after_seconds)


@router.get("/footage/alert/{alert_id}")
def alert_footage(request: Request, alert_id: RowId,
                  user: Annotated[User, Depends(require(PERMISSION))]) -> Response:
    dash = dashboard_of(request)
    alert = dash.store.get_alert(alert_id)
    if alert is None:
        return _not_found(request, user, f"no alert #{alert_id}")
    cover = _alert_coverage(dash, alert)
    if cover is None:
        return _not_found(request, user, f"no camera covers alert #{alert_id} ({alert['kind']})"
                          " in the footage settings (collector.yaml, dashboard.footage)")
    return _form(request, user, alert, cover)


@router.post("/footage/alert/{alert_id}")
def make_alert_clip(request: Request, alert_id: RowId,
                    user: Annotated[User, Depends(require(PERMISSION))],
                    camera: Annotated[str, Form(max_length=200)] = "",
                    reason: Annotated[str, Form(max_length=2000)] = "",
                    csrf_token: Annotated[str, Form(max_length=200)] = "") -> Response:
    check_csrf(user, csrf_token)
    dash = dashboard_of(request)
    alert = dash.store.get_alert(alert_id)
    if alert is None:
        return _not_found(request, user, f"no alert #{alert_id}")
    cover = _alert_coverage(dash, alert)
    if cover is None:
        return _not_found(request, user, f"no camera covers alert #{alert_id}")
    why = " ".join(reason.replace("\x00", "").split())
    if len(why) < REASON_MIN:
        return _form(request, user, alert, cover, 422, "a reason is required: every view of "
                     "footage is recorded with who watched and why (GDPR)", reason, camera)
    chosen = next((c for c in cover.cameras if f"{c.agent_id}/{c.camera_id}" == camera), None)
    if chosen is None:
        return _form(request, user, alert, cover, 422, "camera: choose one of the cameras "
                     "covering this alert", why, "")
    try:
        clip_id = _clip(dash, user, why, alert, cover, chosen)
    except footage.FootageError as e:
        altered = isinstance(e, footage.FootageAltered)
        dash.own_audit.emit(DashboardKind.FOOTAGE_REFUSED, f"camera {chosen.camera_id}",
                            "critical" if altered else "warning", who=user.username,
                            role=user.role, why=why, alert_id=alert_id,
                            camera_agent=chosen.agent_id, camera_id=chosen.camera_id,
                            altered=altered, error=str(e)[:1000])
        status = 409 if altered else 404 if isinstance(e, footage.FootageUnavailable) else 503
        return _form(request, user, alert, cover, status,
                     ("REFUSED: " if altered else "") + str(e), why, camera)
    return RedirectResponse(f"/footage/clips/{clip_id}", 303)


def _clip_dir(settings: FootageSettings) -> Path:
    settings.clip_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return settings.clip_dir


def sweep_clips(settings: FootageSettings, now: float | None = None) -> int:
    """Delete clips older than clip_minutes (and work dirs left by a crash); how many went."""
    directory = settings.clip_dir
    if not directory.is_dir():
        return 0
    cutoff = (now if now is not None else time.time()) - settings.clip_minutes * 60
    gone = 0
    for entry in directory.iterdir():
        try:
            if entry.stat().st_mtime >= cutoff:
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            gone += 1
        except OSError:
            continue
    return gone


def _segment_events(dash: Dashboard, camera: FootageCamera, cover: footage.Coverage
                    ) -> list[dict[str, Any]]:
    """The camera box's cctv.segment events that may hold the range: sealed (and so sent)
    from the range's start to a segment's greatest length after its end, page by page."""
    since = cover.start - timedelta(seconds=60)
    until = cover.end + timedelta(seconds=footage.MAX_SEGMENT_SECONDS + 60)
    events: list[dict[str, Any]] = []
    cursor = None
    while True:
        found = dash.store.query_events(EventQuery(
            agent_id=camera.agent_id, kind=CctvKind.SEGMENT, since=utc_timestamp(since),
            until=utc_timestamp(until), limit=PAGE, cursor=cursor))
        events += found.events
        cursor = found.next_cursor
        if cursor is None:
            return events
        if len(events) >= EVENTS_AT_MOST:
            raise footage.FootageError(f"camera box {camera.agent_id}: more than "
                                       f"{EVENTS_AT_MOST} segments reported around the alert")


def _clip(dash: Dashboard, user: User, why: str, alert: dict[str, Any],
          cover: footage.Coverage, camera: FootageCamera) -> str:
    """Fetch, verify, remux; the view recorded; the clip's id."""
    if not MAKING.acquire(timeout=10):
        raise footage.FootageError("other clips are being made right now; try again in a "
                                   "moment")
    try:
        return _make(dash, user, why, alert, cover, camera)
    finally:
        MAKING.release()


def _make(dash: Dashboard, user: User, why: str, alert: dict[str, Any],
          cover: footage.Coverage, camera: FootageCamera) -> str:
    settings = settings_of(dash)
    sweep_clips(settings)
    segments = footage.segments_of(_segment_events(dash, camera, cover), camera, cover.start,
                                   cover.end)
    if not segments:
        raise footage.FootageUnavailable(
            f"camera {camera.camera_id}: no recorded segment between {cover.start:%H:%M:%S} "
            f"and {cover.end:%H:%M:%S} UTC has reached the collector")
    if len(segments) > settings.max_segments:
        raise footage.FootageError(f"camera {camera.camera_id}: {len(segments)} segments in "
                                   f"range, more than max_segments ({settings.max_segments})")
    directory = _clip_dir(settings)
    work = Path(tempfile.mkdtemp(prefix=".work-", dir=directory))
    clip_id = secrets.token_urlsafe(24)
    try:
        fetched = footage.fetch_verified(settings.sftp, segments, work)
        if not fetched.files:
            raise footage.FootageUnavailable(
                f"camera {camera.camera_id}: none of the {len(segments)} segments in range is "
                "at central storage yet (the camera box offloads each within seconds of "
                "sealing it; try again shortly) or retention removed them")
        clip = footage.make_clip(fetched.files, directory / f"{clip_id}.mp4")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    used = [seg for seg, _ in fetched.files]
    start = used[0].start
    end = used[-1].start + timedelta(seconds=used[-1].duration)
    # recorded before the browser gets a byte: the clip's page and file exist only after this
    dash.own_audit.emit(DashboardKind.FOOTAGE_VIEWED, f"camera {camera.camera_id}", "notice",
                        who=user.username, role=user.role, why=why, what="clip",
                        alert_id=int(alert["id"]), alert_kind=str(alert["kind"]),
                        camera_agent=camera.agent_id, camera_id=camera.camera_id,
                        start=start.isoformat(), end=end.isoformat(),
                        segments=[seg.seq for seg in used],
                        segment_sha256=[seg.sha256 for seg in used],
                        missing=[seg.seq for seg in fetched.missing],
                        clip_sha256=clip.sha256, codec=clip.codec, source="central sftp")
    meta = {"clip_id": clip_id, "user": user.username, "alert_id": int(alert["id"]),
            "alert_kind": str(alert["kind"]), "place": cover.place,
            "camera_agent": camera.agent_id, "camera_id": camera.camera_id, "why": why,
            "codec": clip.codec, "width": clip.width, "height": clip.height,
            "seconds": round(clip.seconds, 1), "sha256": clip.sha256,
            "alert_at": cover.at.isoformat(),
            "alert_offset": round(footage.offset_in_clip(used, cover.at), 1),
            "segments": [{"seq": s.seq, "start": s.start.isoformat(), "sha256": s.sha256}
                         for s in used],
            "missing": [s.seq for s in fetched.missing],
            "created_at": datetime.now(UTC).isoformat()}
    fd = os.open(directory / f"{clip_id}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(meta, f)
    return clip_id


def _own_clip(request: Request, user: User, clip_id: str) -> dict[str, Any] | None:
    """The clip's record when it exists, is not expired and was made for this user."""
    settings = settings_of(dashboard_of(request))
    path = settings.clip_dir / f"{clip_id}.json"
    try:
        if path.stat().st_mtime < time.time() - settings.clip_minutes * 60:
            return None
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("user") != user.username:
        return None
    return meta


@router.get("/footage/clips/{clip_id}")
def clip_page(request: Request, clip_id: ClipId,
              user: Annotated[User, Depends(require(PERMISSION))]) -> Response:
    meta = _own_clip(request, user, clip_id)
    if meta is None:
        return _not_found(request, user, "no such clip for you (clips are kept "
                          f"{settings_of(dashboard_of(request)).clip_minutes} minutes, for the "
                          "user who asked for them)")
    playable = meta["codec"] in footage.BROWSER_CODECS
    return page(request, "footage_clip.html", user, clip=meta, playable=playable,
                note=None if playable else (H265_NOTE if meta["codec"] == "hevc" else
                                            f"This camera records {meta['codec']}, which "
                                            "browsers do not play from MP4: download the clip."),
                video_url=f"/footage/clips/{clip_id}/video.mp4",
                # the player starts a few seconds before the alert's moment (a media fragment)
                start_at=max(0.0, float(meta.get("alert_offset", 0.0)) - LEAD_SECONDS))


@router.get("/footage/clips/{clip_id}/video.mp4")
def clip_video(request: Request, clip_id: ClipId,
               user: Annotated[User, Depends(require(PERMISSION))],
               download: bool = False) -> Response:
    meta = _own_clip(request, user, clip_id)
    if meta is None:
        return Response("no such clip", 404, media_type="text/plain")
    path = settings_of(dashboard_of(request)).clip_dir / f"{clip_id}.mp4"
    name = f"{meta['camera_id']}-alert{meta['alert_id']}.mp4"
    # FileResponse answers Range requests (206, Content-Range): the player seeks by them
    return FileResponse(path, media_type="video/mp4",
                        content_disposition_type="attachment" if download else "inline",
                        filename=name, headers={"Cache-Control": "no-store"})
