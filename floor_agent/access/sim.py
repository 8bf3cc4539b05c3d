"""The door's simulated hardware in one place, for tests, the demo and the benchmark: a real
pcscd with vsmartcard's virtual readers (cards are virtual_card.VirtualCard threads), the
fingerprint module on a pseudo-terminal (zfm_sim), the door on a Unix socket (door_io's
SimulatedRelay). Each speaks the real protocol at the bottom of the stack, so the controller's
own drivers run unchanged.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

VPCD_READERS = ("Virtual PCD 00 00", "Virtual PCD 00 01")
VPCD_PORTS = {VPCD_READERS[0]: 35963, VPCD_READERS[1]: 35964}


def pcsc_readers() -> list[str] | None:
    """The readers pcscd lists, or None when no pcscd answers."""
    from smartcard import scard

    hresult, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if hresult != scard.SCARD_S_SUCCESS:
        return None
    try:
        hresult, readers = scard.SCardListReaders(ctx, [])
        return list(readers) if hresult == scard.SCARD_S_SUCCESS else []
    finally:
        scard.SCardReleaseContext(ctx)


class PcscDaemon:
    """pcscd in the foreground with the vpcd readers; one already running (with them) is reused
    and left running. One pcscd per machine, fixed vpcd ports: never two users at once."""

    def __init__(self, log_dir: Path | None = None) -> None:
        self.log_path = Path(log_dir or tempfile.mkdtemp(prefix="pcscd-")) / "pcscd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15) -> list[str]:
        readers = pcsc_readers()
        if readers is not None:
            if VPCD_READERS[0] not in readers:
                raise RuntimeError(f"a running pcscd lacks the vpcd readers: {readers}")
            return readers
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(["pcscd", "--foreground"], stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while (readers := pcsc_readers()) is None or VPCD_READERS[0] not in readers:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"pcscd without vpcd readers: {self.log_path.read_text()}")
            time.sleep(0.1)
        return readers

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> PcscDaemon:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
