#!/usr/bin/python3
"""The guest half of the test channel: JSON lines on the virtio-serial port "floor.test".

Requests (one JSON object a line): {"id": N, "op": "run", "argv": [...] | "sh": "...",
"timeout": S}, {"id": N, "op": "read", "path": P}, {"id": N, "op": "write", "path": P,
"data": B64, "mode": 0o644}. Each gets one reply with the same id. On start (every boot) it
sends {"event": "ready", "uptime": seconds, "boot_id": ...}. Test machinery only: never
installed outside the test image.
"""
import base64
import json
import os
import select
import subprocess
import time

PORT = "/dev/virtio-ports/floor.test"


def handle(req):
    op = req.get("op")
    if op == "run":
        argv = req["argv"] if "argv" in req else ["/bin/sh", "-c", req["sh"]]
        try:
            done = subprocess.run(argv, capture_output=True, timeout=req.get("timeout", 60))
        except subprocess.TimeoutExpired:
            return {"rc": None, "error": "timeout"}
        return {"rc": done.returncode, "stdout": done.stdout.decode(errors="replace"),
                "stderr": done.stderr.decode(errors="replace")}
    if op == "read":
        try:
            with open(req["path"], "rb") as f:
                return {"data": base64.b64encode(f.read()).decode()}
        except OSError as exc:
            return {"error": str(exc)}
    if op == "write":
        fd = os.open(req["path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, req.get("mode", 0o644))
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64decode(req["data"]))
        return {}
    return {"error": f"unknown op {op!r}"}


def main():
    while not os.path.exists(PORT):
        time.sleep(0.05)
    fd = os.open(PORT, os.O_RDWR)

    def send(obj):
        data = (json.dumps(obj) + "\n").encode()
        while data:
            data = data[os.write(fd, data):]

    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot_id = f.read().strip()
    send({"event": "ready", "uptime": uptime, "boot_id": boot_id})
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    pending = b""
    while True:
        events = poller.poll(1000)
        if not events:
            continue
        if not any(mask & select.POLLIN for _, mask in events):
            time.sleep(0.1)     # host side not connected (POLLHUP): wait for it
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            time.sleep(0.1)
            continue
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if not line.strip():
                continue
            try:
                req = json.loads(line)
                reply = handle(req)
            except Exception as exc:  # a bad request must not end the channel
                req, reply = {}, {"error": f"{type(exc).__name__}: {exc}"}
            reply["id"] = req.get("id")
            send(reply)


main()
