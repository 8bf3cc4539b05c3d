"""cctv: records every production-floor camera, tamper-evident, within retention, with alarms.

model.py (plain data), source.py (PyAV demux, reconnect, health; OpenCV for USB/MJPEG),
segments.py (packets copied into segments, never re-encoded), chain.py (per-camera segment hash
chain and its verification, pure), motion.py and tamper.py (pure over small grey frames),
index.py (the segment index), retention_plan.py (pure: what may be kept, the disk-low
purge) and retention_sweep.py (deleting it), offload.py (SFTP to central storage),
export.py (clips with their hash proof), recorder.py (one camera's pipeline). The synthetic
cameras and RTSP server of the tests and the demo are floor_agent/simulated/camera.py.
"""
