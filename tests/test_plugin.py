"""The pytest wiring seen from outside: missing weights skip cleanly, --require-models fails."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_real_model_checks_skip_cleanly_without_weights(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pytest", "geometry_checks/checks/test_claims.py", "-q", "-rs",
                           "-m", "mxbai or colbert"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env=_isolated_env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed" not in proc.stdout.splitlines()[-1]
    assert "pass --model-path=mxbai=DIR" in proc.stdout
    assert "pass --model-path=colbert=DIR" in proc.stdout


def test_fetched_models_skip_without_weights_in_ci_too(tmp_path):
    """smollm2 and gemma3 (registry `installed=False`): without their weights their checks skip
    with the fetch command, also under CI=true, where only the installed models' (minilm,
    mpnet) absence fails: a CI job that never fetched them does not fail for them."""
    env = _isolated_env(tmp_path)
    env["GEOMETRY_CHECKS_CACHE"] = str(tmp_path / "cache")  # an empty wheelhouse: nothing fetched
    env["CI"] = "true"
    proc = subprocess.run([sys.executable, "-m", "pytest", "geometry_checks/checks", "-q", "-rs", "-p", "no:randomly",
                           "-m", "smollm2 or gemma3"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.splitlines()[-1]
    assert "skipped" in last and "passed" not in last and "failed" not in last, last
    assert "geometry-checks fetch smollm2" in proc.stdout and "geometry-checks fetch gemma3" in proc.stdout
    assert "CI=true" not in proc.stdout


def test_require_models_fails_without_weights(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pytest", "geometry_checks/checks/test_claims.py", "-q",
                           "-m", "colbert", "--require-models"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600, env=_isolated_env(tmp_path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "--require-models: weights for colbert" in proc.stdout
    assert "Traceback" not in proc.stdout


def _isolated_env(tmp_path):
    import os

    env = dict(os.environ)
    env["HF_HOME"] = str(tmp_path / "hf-home")  # an empty cache: no weights, whatever this machine has
    env["HF_HUB_OFFLINE"] = "1"
    return env


def test_a_clone_on_pythonpath_gets_the_plugin_from_conftest(tmp_path):
    """Without entry points (a clone on PYTHONPATH, nothing installed), conftest.py's
    pytest_plugins registers the plugin: its options, markers and fixtures are there.
    (With the package installed, tests/test_package.py checks the entry point.)"""
    env = _isolated_env(tmp_path)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-m", "pytest", "geometry_checks/checks/test_claims.py", "-q", "-rs",
                           "-m", "colbert", "--require-models", "--sentences", str(ROOT / "fixtures" / "core.json")],
                          capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "--require-models: weights for colbert" in proc.stdout


def test_update_baselines_outside_a_checkout_needs_recorded_dir(monkeypatch):
    """An installed package's recorded baselines are never rewritten: one usage line instead."""
    import pytest

    from geometry_checks import paths, plugin

    class Config:
        def __init__(self, **options):
            self.options, self.markers = options, []

        def getoption(self, name):
            return self.options.get(name.lstrip("-").replace("-", "_"))

        def addinivalue_line(self, name, line):
            self.markers.append(line)

    monkeypatch.setattr(paths, "in_checkout", lambda: False)
    config = Config(update_baselines=True)
    with pytest.raises(pytest.UsageError, match=r"--update-baselines would write into the installed package .*; "
                                                r"pass --recorded-dir DIR to record the baselines there$"):
        plugin.pytest_configure(config)
    assert {line.split(":")[0] for line in config.markers} >= {"minilm", "mxbai", "colbert", "any_model"}


def test_a_directory_with_a_registered_models_weights_takes_its_name_for_verdicts():
    """Issue 24: the xfail marks of `--model=DIR` are those of the registered model whose
    weights (sha256) the directory holds; decided at collection, no model loaded."""
    from geometry_checks import loader
    from geometry_checks import plugin as P

    class Config:
        stash = pytest.Stash()

        def getoption(self, name):
            return []

    config = Config()
    assert P.verdict_identity(config, str(loader.bundled_minilm_dir())) == "minilm"
    assert P.verdict_identity(config, "mpnet") == "mpnet"
    assert P.verdict_identity(config, "/nonexistent/model-dir") == "/nonexistent/model-dir"  # its error comes later
