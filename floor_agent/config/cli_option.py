"""The `--config` option every floor-agent command takes, in one place: the same name, type
and help text whichever command (collector, users, API keys, notifications) adds it."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_config_option(parser: argparse.ArgumentParser,
                      default: str | Path) -> argparse.ArgumentParser:
    """Add `--config FILE` (a Path, `default` unless given) to `parser`; `parser` back."""
    parser.add_argument("--config", type=Path, default=Path(default),
                        help=f"YAML file (default {default})")
    return parser
