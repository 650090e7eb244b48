"""The pytest wiring seen from outside: missing weights skip cleanly, --require-models fails."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_real_model_checks_skip_cleanly_without_weights(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pytest", "geometry_checks/checks/test_claims.py", "-q", "-rs",
                           "-m", "mxbai or colbert"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env=_isolated_env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "passed" not in proc.stdout.splitlines()[-1]
    assert "pass --model-path mxbai=DIR" in proc.stdout
    assert "pass --model-path colbert=DIR" in proc.stdout


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
