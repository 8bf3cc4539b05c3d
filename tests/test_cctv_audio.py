"""Audio by decision, not by accident (issue 22, point 4).

The camera's audio track is off by default (recording the spoken word at a workplace is
unlawful in many EU states): a camera that sends audio records video alone, and says so once
per connection through the audit spool (`cctv.audio_not_recorded`, info). With `audio: true`
the audio packets are copied, never re-encoded, into the same segments as the video: every
audio packet the source file holds is in the segments (counted from the files themselves), the
chain verifies, and an export and the collector's clip keep the track. A codec MP4 cannot
store (G.711) is named in a warning with the camera, and the video is recorded all the same.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import av
import numpy as np
import pytest
from audit_events import SpooledEvents
from cctv_recording import Event, WatchedRecorder, of_kind, record_file, section, wait_for

from floor_agent.cctv.chain import verify
from floor_agent.cctv.config import CctvSection
from floor_agent.cctv.export import export
from floor_agent.cctv.index import SegmentIndex
from floor_agent.cctv.model import Segment
from floor_agent.cctv.runner import verify_storage
from floor_agent.cctv.segments import SegmentWriter, audio_storable
from floor_agent.cctv.source import PacketEvent
from floor_agent.collector.footage import make_clip
from floor_agent.common.files import file_sha256
from floor_agent.simulated.camera import RtspServer

FPS = 10
SECONDS = 7
RATE = 16000


def make_av_file(path: Path, audio_codec: str = "aac", seconds: int = SECONDS) -> int:
    """H.264 video (FPS, a key frame every second) with an audio track of `audio_codec`
    (a tone, mono): the audio packets the file holds."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = 160, 96, "yuv420p"
        video.options = {"g": str(FPS), "bf": "0", "preset": "ultrafast"}
        audio = out.add_stream(audio_codec, rate=RATE)
        audio.layout = "mono"
        samples = 1024
        fmt = "fltp" if audio_codec == "aac" else "s16"
        t_audio = 0
        for i in range(FPS * seconds):
            picture = np.full((96, 160, 3), (i * 7) % 256, np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                out.mux(packet)
            while t_audio < (i + 1) * RATE // FPS:
                tone = np.sin(2 * np.pi * 440 * (t_audio + np.arange(samples)) / RATE)
                data = (tone * 0.3).astype(np.float32) if fmt == "fltp" else \
                    (tone * 8000).astype(np.int16)
                chunk = av.AudioFrame.from_ndarray(data[None, :], format=fmt, layout="mono")
                chunk.sample_rate, chunk.pts = RATE, t_audio
                for packet in audio.encode(chunk):
                    out.mux(packet)
                t_audio += samples
        for stream in (video, audio):
            for packet in stream.encode(None):
                out.mux(packet)
    return count_packets(path)[1]


def audio_before_first_picture(path: Path) -> int:
    """Audio packets timed before the file's first video packet (AAC's encoder priming):
    before a connection's first key frame, counted as lost like video there."""
    with av.open(str(path)) as container:
        times = [(p.stream.type, float(p.dts * p.time_base)) for p in container.demux()
                 if p.size and p.dts is not None]
    first_video = min(t for kind, t in times if kind == "video")
    return sum(1 for kind, t in times if kind == "audio" and t < first_video)


def count_packets(path: Path) -> tuple[int, int]:
    """(video, audio) packets in a file."""
    video = audio = 0
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.size:
                if packet.stream.type == "video":
                    video += 1
                elif packet.stream.type == "audio":
                    audio += 1
    return video, audio


def record(video: Path, footage: Path, audio: bool | None) -> tuple[CctvSection, list[Event],
                                                                     WatchedRecorder]:
    """Record `video` as camera cam1 through the real recorder (events through a real
    spool), to the file's end; the chain must verify (cctv_recording.record_file)."""
    recorder, events = record_file(video, footage, **({} if audio is None else
                                                      {"audio": audio}))
    return recorder.section, events, recorder


def segment_files(config: CctvSection) -> list[Path]:
    return sorted(config.storage_dir.glob("cam1/*/*/*.mp4"))


def test_audio_is_off_by_default_and_the_config_refuses_anything_but_a_bool() -> None:
    camera = {"camera_id": "cam1", "name": "Floor", "url": "rtsp://cam/1"}
    assert CctvSection.model_validate({"cameras": [camera]}).cameras[0].audio is False
    with pytest.raises(ValueError, match="audio"):
        CctvSection.model_validate({"cameras": [camera | {"audio": "yes"}]})


def test_mp4_segments_store_aac_but_not_g711() -> None:
    assert audio_storable("aac")
    assert not audio_storable("pcm_alaw")
    assert not audio_storable("pcm_mulaw")


def test_by_default_audio_is_not_recorded_and_the_camera_box_says_so(tmp_path: Path) -> None:
    video = tmp_path / "cam.mp4"
    make_av_file(video)
    config, events, _ = record(video, tmp_path / "footage", audio=None)
    files = segment_files(config)
    assert files
    assert all(count_packets(f)[1] == 0 for f in files), "audio in a segment by default"
    with av.open(str(files[0])) as container:
        assert not container.streams.audio
    said = [(sev, data) for kind, sev, data in events if kind == "cctv.audio_not_recorded"]
    assert said == [("info", {"camera_id": "cam1", "codec": "aac",
                              "reason": "not recorded by policy (audio: false)"})]
    assert not of_kind(events, "cctv.packets_lost"), "audio left out by policy is not a loss"


def test_audio_on_keeps_every_audio_packet_and_export_and_the_clip_keep_it(
        tmp_path: Path) -> None:
    video = tmp_path / "cam.mp4"
    make_av_file(video)
    sent_video, sent_audio = count_packets(video)
    early = audio_before_first_picture(video)
    assert sent_audio > 100 and early == 1  # AAC's priming packet
    kept = sent_audio - early
    config, events, recorder = record(video, tmp_path / "footage", audio=True)
    files = segment_files(config)
    assert len(files) >= 3, "cut at the video's key frames every segment_seconds"
    counts = [count_packets(f) for f in files]
    assert sum(v for v, _ in counts) == sent_video
    assert sum(a for _, a in counts) == kept, (counts, dict(recorder.writer.dropped))
    assert all(a > 0 for _, a in counts), "every segment carries its part of the audio"
    assert not of_kind(events, "cctv.audio_not_recorded")
    # the one packet before the first picture is not silently gone: counted, a notice
    lost = [(sev, data) for kind, sev, data in events if kind == "cctv.packets_lost"]
    assert [(sev, data["count"], data["reasons"]) for sev, data in lost] == [
        ("notice", early, f"waiting for a key frame: {early}")]
    segments = of_kind(events, "cctv.segment")
    assert sum(s["audio_packets"] for s in segments) == kept
    assert [s["audio_packets"] for s in segments] == [a for _, a in counts]
    for f in files:  # in time with the video: the tracks end together, within an audio frame
        with av.open(str(f)) as container:
            ends = {p.stream.type: float((p.pts + (p.duration or 0)) * p.time_base)
                    for p in container.demux() if p.size}
        assert abs(ends["audio"] - ends["video"]) <= 1024 / RATE + 1e-6, ends
    for f in files:  # copied, never re-encoded: the camera's own codec, decodable
        with av.open(str(f)) as container:
            assert container.streams.audio[0].codec_context.name == "aac"
            assert sum(1 for _ in container.decode(audio=0)) > 0

    with SegmentIndex.in_storage(config.storage_dir) as index:
        first = index.segments("cam1", include_retired=False)[0].segment
        clip = tmp_path / "clip.mp4"
        result = export(index, config.storage_dir, "cam1", first.start,
                        first.start + timedelta(seconds=SECONDS + 5), "audio test", "tester",
                        clip, SpooledEvents())
    assert result.packets == sent_video
    assert count_packets(clip) == (sent_video, kept)
    # a range from mid-segment: the audio from the clip's first picture to its last
    with SegmentIndex.in_storage(config.storage_dir) as index:
        part = tmp_path / "part.mp4"
        export(index, config.storage_dir, "cam1", first.start + timedelta(seconds=2.5),
               first.start + timedelta(seconds=4.5), "audio test", "tester", part,
               SpooledEvents())
    with av.open(str(part)) as container:
        spans: dict[str, list[float]] = {"video": [], "audio": []}
        for p in container.demux():
            if p.size:
                spans[p.stream.type].append(float(p.pts * p.time_base))
    assert spans["audio"], "the part has its sound"
    assert min(spans["audio"]) >= min(spans["video"]) - 1e-6
    assert max(spans["audio"]) <= max(spans["video"]) + 0.1 + 1024 / RATE
    assert len(spans["audio"]) >= (max(spans["video"]) - min(spans["video"])) * RATE / 1024 - 2

    collector_clip = tmp_path / "collector.mp4"
    with SegmentIndex.in_storage(config.storage_dir) as index:
        records = [r.segment for r in index.segments("cam1", include_retired=False)]
    made = make_clip([(s, config.storage_dir / s.path) for s in records], collector_clip)
    assert made.packets == sent_video
    assert count_packets(collector_clip) == (sent_video, kept)
    with av.open(str(collector_clip)) as container:  # plays: the audio decodes throughout
        assert container.streams.audio[0].codec_context.name == "aac"
        assert sum(f.samples for f in container.decode(audio=0)) == kept * 1024


def test_a_codec_mp4_cannot_store_is_named_and_the_video_is_recorded(tmp_path: Path) -> None:
    video = tmp_path / "cam.mov"  # QuickTime stores G.711 (as a camera's RTSP sends it)
    make_av_file(video, "pcm_alaw")
    sent_video, sent_audio = count_packets(video)
    assert sent_audio > 0
    config, events, _ = record(video, tmp_path / "footage", audio=True)
    files = segment_files(config)
    assert sum(count_packets(f)[0] for f in files) == sent_video
    said = [(sev, data) for kind, sev, data in events if kind == "cctv.audio_not_recorded"]
    assert len(said) == 1
    severity, data = said[0]
    assert severity == "warning"
    assert data["camera_id"] == "cam1" and data["codec"] == "pcm_alaw"
    assert "pcm_alaw" in data["reason"] and "cannot be stored" in data["reason"]


class CountingRecorder(WatchedRecorder):
    """The real recorder; it also counts the packets the source hands it, by kind (read
    before the writer takes the packet over)."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.handed: dict[str, int] = {"video": 0, "audio": 0}

    def on_event(self, event: object) -> None:
        if isinstance(event, PacketEvent) and event.packet.size:
            self.handed[event.packet.stream.type] += 1
        super().on_event(event)


def record_rtsp(launch: str, footage: Path, *, until: str, segments: int = 2
                ) -> tuple[CctvSection, list[Event], CountingRecorder]:
    """Record a real GStreamer RTSP server's mount (audio: true) until `until` is emitted
    (after `segments` segments), then stop; the chain must verify."""
    events: list[Event] = []
    with RtspServer({"cam1": launch}) as server:
        config = section(footage, ("cam1", server.url("cam1")), audio=True)
        with SegmentIndex.in_storage(config.storage_dir) as index:
            recorder = CountingRecorder(config, 0, index, events)
            recorder.start()
            try:
                wait_for(lambda: len(of_kind(events, "cctv.segment")) >= segments
                         and bool(of_kind(events, until)), 60, f"{segments} segments, {until}")
            finally:
                recorder.stop()
    assert verify_storage(config).report.ok
    return config, events, recorder


def test_aac_over_rtsp_every_audio_packet_handed_on_is_in_a_segment_or_counted(
        tmp_path: Path) -> None:
    video = tmp_path / "cam.mp4"
    make_av_file(video, seconds=6)
    launch = (f"( filesrc location={video} ! qtdemux name=d d.video_0 ! queue ! h264parse ! "
              "rtph264pay name=pay0 pt=96 config-interval=1 d.audio_0 ! queue ! aacparse ! "
              "rtpmp4gpay name=pay1 pt=97 )")
    config, events, recorder = record_rtsp(launch, tmp_path / "footage",
                                           until="cctv.stream_lost")
    files = segment_files(config)
    in_files = [count_packets(f) for f in files]
    video_kept, audio_kept = sum(v for v, _ in in_files), sum(a for _, a in in_files)
    handed, dropped = recorder.handed, recorder.writer.dropped
    assert handed["audio"] > 50 and audio_kept > 0
    # nothing silent: what the source handed on is in the segments or counted as lost
    assert video_kept + audio_kept + sum(dropped.values()) == handed["video"] + handed["audio"]
    assert set(dropped) <= {"waiting for a key frame"}, dict(dropped)
    assert sum(s["audio_packets"] for s in of_kind(events, "cctv.segment")) == audio_kept
    assert not of_kind(events, "cctv.audio_not_recorded")


def test_g711_over_rtsp_is_named_and_the_video_recorded(tmp_path: Path) -> None:
    launch = ("( videotestsrc is-live=true pattern=ball ! video/x-raw,width=160,height=96,"
              "framerate=10/1 ! videoconvert ! x264enc tune=zerolatency key-int-max=10 "
              "speed-preset=ultrafast ! video/x-h264,profile=baseline ! "
              "rtph264pay name=pay0 pt=96 config-interval=1 "
              "audiotestsrc is-live=true ! audio/x-raw,rate=8000,channels=1 ! alawenc ! "
              "rtppcmapay name=pay1 pt=8 )")
    config, events, recorder = record_rtsp(launch, tmp_path / "footage",
                                           until="cctv.audio_not_recorded")
    said = [(sev, data) for kind, sev, data in events if kind == "cctv.audio_not_recorded"]
    assert said[0][0] == "warning"
    assert said[0][1]["camera_id"] == "cam1" and said[0][1]["codec"] == "pcm_alaw"
    assert recorder.handed["audio"] > 0
    files = segment_files(config)
    assert len(files) >= 2 and all(count_packets(f) == (count_packets(f)[0], 0) for f in files)
    assert sum(count_packets(f)[0] for f in files) > 0
    assert not [d for d in of_kind(events, "cctv.packets_lost")
                if "audio" in d["reasons"]], "a whole track left out is the warning, not loss"


def test_audio_follows_the_video_across_a_new_connection(tmp_path: Path) -> None:
    """Two streams one after the other (a reconnect, as the writer sees it): each
    connection's audio goes into its own segments, none left behind, none before its first
    picture kept (counted instead)."""
    files = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    for path in files:
        make_av_file(path, seconds=3)
    segments: list[Segment] = []
    writer = SegmentWriter("cam1", tmp_path / "footage", segments.append, segment_seconds=1.0,
                           audio=True)
    for path in files:
        with av.open(str(path)) as container:
            for packet in container.demux(container.streams.video[0],
                                          container.streams.audio[0]):
                if packet.size:
                    writer.write(packet)
    writer.close()
    sent = [count_packets(path) for path in files]
    early = sum(audio_before_first_picture(path) for path in files)
    stored = [count_packets(tmp_path / "footage" / s.path) for s in segments]
    assert [s.audio_packets for s in segments] == [a for _, a in stored]
    assert sum(v for v, _ in stored) == sum(v for v, _ in sent)
    assert sum(a for _, a in stored) == sum(a for _, a in sent) - early
    assert dict(writer.dropped) == {"waiting for a key frame": early}
    assert [s.seq for s in segments] == list(range(1, len(segments) + 1))
    assert verify(segments, lambda p: file_sha256(tmp_path / "footage" / p)).ok
