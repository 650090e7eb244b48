"""Shared test fixtures: stand-in model directories, built once per session."""
from __future__ import annotations

import os
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


# --- pytest-xdist (issue 4): `pytest -n 2 --dist loadgroup` -------------------------------------
# Every test marked with a model (standin, mxbai, colbert, minilm, mpnet, any_model; `thesis`, which
# measures four models and twelve controls) joins that model's
# xdist_group, so with --dist loadgroup each model's tests run on one worker, and a worker
# loads (or, for the stand-ins, builds) only the models its tests use. Without xdist the
# marks are inert. docs/performance.md has the command.
MODEL_GROUPS = ("standin", "mxbai", "colbert", "minilm", "mpnet", "smollm2", "gemma3", "thesis", "any_model")


def pytest_configure(config):
    """An xdist worker takes its share of the cores for torch's intra-op threads (issue 24).

    torch starts as many threads as there are cores in every process: two workers on two cores
    would run four, and OpenMP threads that outnumber the cores slow each other down (the
    batched small SVDs of docs/performance.md's "Threads" ran up to 60 times slower so). One
    worker per core, one thread per worker. The subprocesses some tests start are not affected.
    """
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers and hasattr(config, "workerinput"):
        import torch

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, cores // int(workers)))


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the marks into "@group" node IDs
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            model = next((m for m in MODEL_GROUPS if item.get_closest_marker(m) is not None), None)
            if model is not None:
                item.add_marker(pytest.mark.xdist_group(model))
# --- end pytest-xdist ----------------------------------------------------------------------------
