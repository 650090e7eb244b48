"""The README's test command runs on two pytest-xdist workers (issue 24). The workers run the
checks; the controller writes --findings-md and prints the baselines it recorded, from what the
workers send it (geometry_checks/plugin.py). Here: the same findings, in the same order, as one
process writes, and the "recorded" lines of --update-baselines reach the terminal.

Both runs have one torch thread (OMP_NUM_THREADS=1, as tests/conftest.py gives a worker on two
cores), so their measurements share one cache entry and the two findings files can be compared
byte for byte.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.minilm, pytest.mark.xdist_group("xdist-subprocesses")]
pytest.importorskip("xdist")


def _pytest(tmp_path: Path, *args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER",
                                                            "PYTEST_XDIST_WORKER_COUNT")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)


def test_findings_md_under_xdist_equal_a_single_process_run(tmp_path):
    # two groups (minilm measured, mxbai skipped: no weights in an empty HF_HOME), so both workers
    # send rows to the controller
    checks = ["geometry_checks/checks/test_claims.py", "-m", "minilm or mxbai"]
    single = _pytest(tmp_path, *checks, "-p", "no:xdist", "--findings-md", tmp_path / "single" / "findings.md")
    assert single.returncode == 0, single.stdout[-3000:] + single.stderr
    workers = _pytest(tmp_path, *checks, "-n", "2", "--dist", "loadgroup",
                      "--findings-md", tmp_path / "xdist" / "findings.md")
    assert workers.returncode == 0, workers.stdout[-3000:] + workers.stderr
    assert "bringing up nodes" in workers.stdout, workers.stdout[-3000:]  # xdist ran
    for name in ("findings.md", "findings.json"):
        assert (tmp_path / "xdist" / name).read_text() == (tmp_path / "single" / name).read_text(), name
    rows = json.loads((tmp_path / "xdist" / "findings.json").read_text())["rows"]
    assert {row["model"] for row in rows} >= {"minilm", "mxbai"}
    assert any(row["verdict"] == "passed" for row in rows)


def test_update_baselines_under_xdist_names_what_it_recorded(tmp_path):
    recorded = tmp_path / "rec"
    proc = _pytest(tmp_path, "geometry_checks/checks/test_recorded.py", "-m", "minilm", "-n", "2",
                   "--dist", "loadgroup", "--recorded-dir", recorded, "--update-baselines")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert (recorded / "minilm" / "core.json").is_file()
    assert proc.stdout.count(f"geometry-checks: recorded {recorded / 'minilm' / 'core.json'}") == 1, \
        proc.stdout[-3000:]
