"""`POST /api/v1/snapshots/{camera}`: a cctv agent's latest frame of a camera, as a small JPEG.

The collector keeps no footage; the dashboard shows each camera's latest picture. Requests are
signed by the agent's enrolled key (protocol/request_signing.py, the X-Floor-Agent header,
as the door controllers' sync), only `cctv` agents may upload, the body is image/jpeg of at
most 512 KiB and must decode as a JPEG. Only the latest per (agent, camera) is kept.
"""

from __future__ import annotations

import re

import cv2
import numpy as np
from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from floor_agent.collector.api_credentials import read_body
from floor_agent.protocol.event import utc_timestamp

router = APIRouter(tags=["cameras"])
MAX_BYTES = 512 * 1024
CAMERA_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CCTV_ROLE = "cctv"
# A 4K frame fits with room; decoding one this size takes 48 MiB. A JPEG is small for its
# pixels (505 KiB can say 11500x11500: 400 MB decoded), so the header is read first.
MAX_PIXELS = 4096 * 4096
# start-of-frame markers (C4 DHT, C8 JPG and CC DAC share the range but are not frames)
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def jpeg_size(body: bytes) -> tuple[int, int] | None:
    """(width, height) from the frame header, walking the segments without decoding; None when
    there is no frame header before the scan (pure over bytes)."""
    i = 2  # after SOI
    while i + 4 <= len(body):
        if body[i] != 0xFF:
            return None
        marker = body[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan: no frame header before
            return None
        if marker in SOF_MARKERS:
            if i + 9 > len(body):
                return None
            return (int.from_bytes(body[i + 7:i + 9], "big"),
                    int.from_bytes(body[i + 5:i + 7], "big"))
        i += 2 + int.from_bytes(body[i + 2:i + 4], "big")
    return None


def jpeg_problem(body: bytes) -> tuple[str | None, int, int]:
    """(why the body is not a usable JPEG or None, width, height) (pure over bytes): the
    frame header's size is checked before anything is decoded."""
    if not body.startswith(b"\xff\xd8\xff"):
        return "body: not a JPEG (no SOI marker at the start)", 0, 0
    size = jpeg_size(body)
    if size is None:
        return "body: not a JPEG (no frame header)", 0, 0
    if size[0] * size[1] > MAX_PIXELS or 0 in size:
        return (f"body: a {size[0]}x{size[1]} JPEG; at most {MAX_PIXELS} pixels are taken "
                f"(send the camera's snapshot size)", 0, 0)
    image = cv2.imdecode(np.frombuffer(body, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return "body: the JPEG does not decode", 0, 0
    return None, int(image.shape[1]), int(image.shape[0])


@router.post("/api/v1/snapshots/{camera}", status_code=201,
             responses={401: {}, 403: {}, 413: {}, 415: {}, 422: {}},
             # read raw (it is signed byte for byte): declared so clients and the fuzzer see it
             openapi_extra={"requestBody": {"required": True, "content": {
                 "image/jpeg": {"schema": {"type": "string", "format": "binary",
                                           "maxLength": MAX_BYTES}}}}})
async def upload_snapshot(request: Request, camera: str) -> JSONResponse:
    """Store a camera's latest snapshot (image/jpeg, <= 512 KiB), signed by a cctv agent."""
    if not CAMERA_RE.match(camera):
        raise HTTPException(422, "camera: expected 1-64 of [A-Za-z0-9._-]")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "image/jpeg":
        raise HTTPException(415, f"content-type: expected image/jpeg, got {content_type!r}")
    body = await read_body(request, MAX_BYTES, "snapshot")
    # the key lookup, the JPEG decode and the write block: off the event loop, as the door's
    # signed routes run theirs
    return await run_in_threadpool(_store_snapshot, request, camera, body)


def _store_snapshot(request: Request, camera: str, body: bytes) -> JSONResponse:
    agent = request.app.state.agent_auth.verified(request, body)
    if agent.role != CCTV_ROLE:
        raise HTTPException(403, f"agent {agent.agent_id!r} has role {agent.role!r}; only "
                                 f"cctv agents upload snapshots")
    problem, width, height = jpeg_problem(body)
    if problem:
        raise HTTPException(422, problem)
    now = utc_timestamp()
    request.app.state.store.put_snapshot(agent.agent_id, camera, body, width, height, now)
    return JSONResponse({"agent_id": agent.agent_id, "camera": camera, "width": width,
                         "height": height, "received_at": now}, 201)
