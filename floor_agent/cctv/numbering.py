"""The camera's own picture numbering, to see what it never sent (pure).

H.264 numbers reference pictures in every slice header (`frame_num`): each reference picture
is one more than the previous one (modulo MaxFrameNum, from the SPS), non-reference pictures
repeat the next number, an IDR starts again at 0. A jump means reference pictures the camera
encoded never reached us (lost on the camera's side or on the way): nothing the recorder can
keep, so it is counted with the segment. Non-reference pictures (most B-frames) carry no
number of their own, so their loss is not seen here; H.265 numbers pictures by POC, which
says nothing about loss, so H.265 streams are not checked.

Only the first bytes of the first slice of each packet are read (no decoding).
"""

from __future__ import annotations

from dataclasses import dataclass

SLICE, IDR, SPS = 1, 5, 7
HEAD = 32  # bytes of a slice NAL unit read: its header's first fields fit in a few
HIGH_PROFILES = (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135)


class _Bits:
    """Exp-Golomb reader over a NAL unit's payload (emulation prevention bytes removed)."""

    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "big")
        self.left = len(data) * 8

    def u(self, n: int) -> int:
        if n > self.left:
            raise ValueError("NAL unit too short")
        self.left -= n
        return (self.value >> self.left) & ((1 << n) - 1)

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad Exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _rbsp(nal: bytes, limit: int) -> bytes:
    """About the first `limit` bytes of a NAL unit's payload, emulation prevention removed
    (00 00 03 -> 00 00; enough for the few fields read here)."""
    return nal[1:limit + limit // 2].replace(b"\x00\x00\x03", b"\x00\x00")


def sps_frame_num(nal: bytes) -> tuple[int, bool, bool]:
    """(log2 of MaxFrameNum, separate_colour_plane_flag, gaps_in_frame_num_value_allowed_flag)
    from an SPS NAL unit."""
    r = _Bits(_rbsp(nal, 256))
    profile = r.u(8)
    r.u(16)  # constraint flags, level
    r.ue()  # seq_parameter_set_id
    separate = False
    if profile in HIGH_PROFILES:
        chroma = r.ue()
        if chroma == 3:
            separate = bool(r.u(1))
        r.ue()
        r.ue()  # bit depths
        r.u(1)  # qpprime_y_zero_transform_bypass_flag
        if r.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma != 3 else 12):
                if r.u(1):
                    size, last, nxt = (16 if i < 6 else 64), 8, 8
                    for _ in range(size):
                        if nxt:
                            nxt = (last + r.se() + 256) % 256
                        last = nxt or last
    log2_max = r.ue() + 4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        r.u(1)
        r.se()
        r.se()
        for _ in range(r.ue()):
            r.se()
    r.ue()  # max_num_ref_frames
    return log2_max, separate, bool(r.u(1))


def nal_units(data: bytes, length_size: int | None) -> list[bytes]:
    """A packet's NAL units: length-prefixed (`length_size` bytes, as MP4 stores) or Annex B."""
    units: list[bytes] = []
    if length_size is None:
        pos = data.find(b"\x00\x00\x01")
        while pos >= 0:
            start = pos + 3
            pos = data.find(b"\x00\x00\x01", start)
            units.append(data[start:len(data) if pos < 0 else pos].rstrip(b"\x00"))
        return [u for u in units if u]
    pos = 0
    while pos + length_size <= len(data):
        size = int.from_bytes(data[pos:pos + length_size], "big")
        units.append(data[pos + length_size:pos + length_size + size])
        pos += length_size + size
    return [u for u in units if u]


@dataclass
class FrameNumbering:
    """One H.264 stream's numbering, fed every packet in decode order; `step` says how many
    reference pictures are missing before this one."""

    length_size: int | None = None  # NAL length prefix (from avcC), None for Annex B
    log2_max: int | None = None
    separate_colour: bool = False
    prev_ref: int | None = None

    @staticmethod
    def for_extradata(extradata: bytes) -> FrameNumbering:
        numbering = FrameNumbering()
        if extradata[:1] == b"\x01" and len(extradata) > 8:  # avcC
            numbering.length_size = (extradata[4] & 3) + 1
            if extradata[5] & 0x1F:
                size = int.from_bytes(extradata[6:8], "big")
                numbering._sps(extradata[8:8 + size])
        else:
            for nal in nal_units(extradata, None):
                numbering._sps(nal)
        return numbering

    def _sps(self, nal: bytes) -> None:
        if nal and nal[0] & 0x1F == SPS:
            try:
                log2_max, self.separate_colour, gaps_allowed = sps_frame_num(nal)
            except ValueError:
                log2_max, gaps_allowed = None, False
            # an encoder allowed to skip numbers (temporal scalability) says nothing by it
            self.log2_max = None if gaps_allowed else log2_max

    def step(self, data: bytes) -> int:
        """Reference pictures missing before this packet's picture (0 when none, or when the
        packet cannot be read: the numbering starts again at the next one)."""
        if self.length_size is None:  # Annex B: from start code to start code
            pos = data.find(b"\x00\x00\x01")
            while 0 <= pos < len(data) - 3:
                start = pos + 3
                kind = data[start] & 0x1F
                if kind in (SLICE, IDR):
                    return self._picture(data[start:start + HEAD], kind)
                pos = data.find(b"\x00\x00\x01", start)
                if kind == SPS:
                    self._sps(data[start:len(data) if pos < 0 else pos])
            return 0
        n, pos = self.length_size, 0
        while pos + n < len(data):  # walk the lengths; copy only the slice header's bytes
            size = int.from_bytes(data[pos:pos + n], "big")
            kind = data[pos + n] & 0x1F
            if kind == SPS:
                self._sps(data[pos + n:pos + n + size])
            elif kind in (SLICE, IDR):
                return self._picture(data[pos + n:pos + n + min(size, HEAD)], kind)
            pos += n + size
        return 0

    def _picture(self, nal: bytes, kind: int) -> int:
        if self.log2_max is None:
            return 0
        try:
            r = _Bits(_rbsp(nal, 16))
            r.ue()
            r.ue()
            r.ue()  # first_mb_in_slice, slice_type, pic_parameter_set_id
            if self.separate_colour:
                r.u(2)
            frame_num = r.u(self.log2_max)
        except ValueError:
            self.prev_ref = None
            return 0
        is_ref = bool(nal[0] & 0x60)
        missing = 0
        if kind == IDR:
            self.prev_ref = None
        elif self.prev_ref is not None:
            ahead = (frame_num - self.prev_ref) % (1 << self.log2_max)
            missing = max(0, ahead - 1)  # 0: the same number (a field pair), 1: the next
            if missing:  # counted once: as a decoder does, take the missing ones as seen
                self.prev_ref = (frame_num - 1) % (1 << self.log2_max)
        if is_ref or kind == IDR:
            self.prev_ref = frame_num
        return missing
