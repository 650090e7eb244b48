"""Shared test fixtures: stand-in model directories, built once per session."""
from __future__ import annotations

import shutil
import time

import pytest

from geometry_checks.standins import build_standin


@pytest.fixture(scope="session")
def standin_dirs(tmp_path_factory):
    """name -> stand-in directory, each built at most once per session and removed at its end."""
    root = tmp_path_factory.mktemp("standins")
    built: dict[str, object] = {}

    def get(name: str):
        if name not in built:
            started = time.perf_counter()
            built[name] = build_standin(name, root / name, seed=0)
            print(f"\n{name} stand-in built in {time.perf_counter() - started:.1f}s")
        return built[name]

    yield get
    shutil.rmtree(root, ignore_errors=True)  # ~1.3 GB: do not leave it to pytest's tmp retention
