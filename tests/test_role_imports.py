"""Each role runs with its own Python dependencies only (pyproject.toml's extras, one per role).

A role's Debian package installs `floor-agent[<role>]` and nothing else: a workstation has no
OpenCV, PyAV, WeasyPrint or web server, a door no udev bindings. This test runs each role's
entry path in a fresh interpreter (the CLI's parser, the role's config loaded and its
capabilities built, every module of the role's own packages imported) under an import hook
that refuses the other roles' third-party modules, and fails naming the floor_agent module
that asked for one. The fix is a lazy import: into the function (or the role) that needs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Top-level modules each extra brings (what `import` names, not the distribution's name).
EXTRA_MODULES: dict[str, frozenset[str]] = {
    "workstation": frozenset({"pyudev", "pyroute2", "psutil", "dns"}),
    "door": frozenset({"smartcard", "osdp", "serial", "gpiod"}),
    "cctv": frozenset({"av", "cv2", "numpy", "paramiko"}),
    "collector": frozenset({
        "fastapi", "starlette", "uvicorn", "httptools", "uvloop", "watchfiles", "websockets",
        "psycopg", "psycopg_binary", "prometheus_client", "cv2", "numpy", "jinja2", "argon2",
        "multipart", "python_multipart", "weasyprint", "paramiko", "av"}),
    "retention": frozenset({"paramiko"}),
}
# The test extra's: no role may import them.
TEST_ONLY = frozenset({"pytest", "hypothesis", "playwright", "schemathesis", "mypy", "ruff"})

# The floor_agent packages and modules that belong to each role: all imported in the probe.
ROLE_PACKAGES: dict[str, list[str]] = {
    "workstation": ["floor_agent.usb_guard", "floor_agent.netlock", "floor_agent.ws_policy"],
    "door": ["floor_agent.access"],
    "cctv": ["floor_agent.cctv"],
    "collector": ["floor_agent.collector", "floor_agent.dashboard", "floor_agent.store",
                  "floor_agent.report", "floor_agent.privacy"],
    "retention": ["floor_agent.retention"],
}


def forbidden(role: str) -> set[str]:
    others = set().union(*(mods for r, mods in EXTRA_MODULES.items() if r != role))
    return (others - EXTRA_MODULES[role]) | TEST_ONLY


# Runs in the child: argv = role, forbidden modules (comma-separated), extra modules to import.
PROBE = r'''
import importlib, importlib.abc, json, pkgutil, sys

role, refused, extra = sys.argv[1], set(sys.argv[2].split(",")), sys.argv[3:]
hits = []

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top not in refused:
            return None
        frame, importer = sys._getframe(1), None
        while frame is not None:  # the first frame outside the import machinery
            module = frame.f_globals.get("__name__", "")
            if not module.startswith(("importlib", "_frozen_importlib")):
                importer = module
                break
            frame = frame.f_back
        if importer and importer.startswith("floor_agent"):
            hits.append([top, importer])
        # As on a machine without the module (a third party's optional import survives it).
        raise ModuleNotFoundError(f"{top}: not installed for the {role} role", name=top)

sys.meta_path.insert(0, Refuse())

from floor_agent import cli
from floor_agent.roles.config import load_config

cli.build_parser()
source = f"config/{role}.yaml"
config = load_config(source, role)
if role in ("workstation", "door", "cctv"):
    from floor_agent.roles import run
    run.capabilities(config, source)
elif role == "collector":
    from floor_agent.collector import server
    from floor_agent.dashboard.app import extension
names = []
for package in PACKAGES[role]:
    module = importlib.import_module(package)
    names.append(package)
    if hasattr(module, "__path__"):
        names += [m.name for m in pkgutil.walk_packages(module.__path__, package + ".")]
for name in names + extra:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name not in refused:  # a refused one is in hits already, with its importer
            raise
print(json.dumps(sorted(set(map(tuple, hits)))))
'''


def probe(role: str, extra: tuple[str, ...] = ()) -> list[list[str]]:
    code = f"PACKAGES = {ROLE_PACKAGES!r}\n" + PROBE
    done = subprocess.run(
        [sys.executable, "-c", code, role, ",".join(sorted(forbidden(role))), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (
        f"the {role} role's entry path fails without the other roles' modules:\n{done.stderr}")
    result: list[list[str]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("role", sorted(ROLE_PACKAGES))
def test_a_role_imports_no_other_roles_dependencies(role: str) -> None:
    hits = probe(role)
    assert not hits, f"the {role} role imports other roles' dependencies: " + "; ".join(
        f"{importer} imports {module}" for module, importer in hits)


def test_the_probe_names_the_module_that_pulls_a_forbidden_import() -> None:
    # The workstation importing the recorder would pull OpenCV and PyAV into it.
    hits = probe("workstation", ("floor_agent.cctv.recorder",))
    assert ["cv2", "floor_agent.cctv.recorder"] in hits
