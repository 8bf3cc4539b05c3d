"""Shared fixtures: a real collector process on loopback HTTPS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_process import CollectorProcess


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorProcess]:
    proc = CollectorProcess(tmp_path)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
