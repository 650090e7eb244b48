"""The package as a user gets it: `python -m build` makes an sdist and a wheel that `twine check`
passes; the wheel, installed without -e into a fresh virtual environment, runs the report,
`measure` and `pytest --pyargs geometry_checks -m minilm` from an empty directory outside
the checkout, and gates a user's own model (the README's recipe).

The virtual environment sees the packages of the interpreter running these tests (torch and
transformers are not installed again): a `.pth` file in its site-packages adds, with
`site.addsitedir`, every site directory on the running interpreter's `sys.path`, in order.
Not `--system-site-packages`: run from inside a virtual environment (as the README suggests),
that option gives the new venv the *base* interpreter's packages, not those of the venv that
holds torch (issue 24). `site.addsitedir` processes those directories' own `.pth` files too,
as `--system-site-packages` would, so an editable install of this repository may be among them:
the added directories come after the venv's own site-packages, and an editable finder after
the path-based import, so the wheel installed into the venv shadows it; a test says so
(`geometry_checks.__file__` lies in the venv). Every command runs with PYTHONPATH unset, from
a temporary directory. Slow (a build, a venv and a few MiniLM runs: minutes), and CI runs it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# its own xdist group: its runs are subprocesses that load MiniLM themselves, so it need not wait
# behind the in-process MiniLM checks on their worker (tests/conftest.py groups by model otherwise)
pytestmark = [pytest.mark.slow, pytest.mark.minilm, pytest.mark.xdist_group("package")]

DATA = ("geometry_checks/data/baselines/published/claims.json",
        "geometry_checks/data/baselines/published/embedding-layers.json",
        "geometry_checks/data/baselines/recorded/minilm/core.json",
        "geometry_checks/data/fixtures/core.json",
        "geometry_checks/checks/test_claims.py",
        "geometry_checks/checks/test_recorded.py")


def _run(cmd, cwd, env, timeout=900) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    print(f"$ {' '.join(str(c) for c in cmd)}  (rc {proc.returncode})\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc


def _source_copy(dest: Path) -> Path:
    """The repository's files (tracked or not ignored, links kept as links): the build writes
    build/ and *.egg-info into its source folder, which must not be the checkout."""
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout.split("\0")
    except (OSError, subprocess.CalledProcessError):
        listed = None
    if listed is None:  # not a git checkout: everything but caches and build outputs
        shutil.copytree(ROOT, dest, symlinks=True, ignore=shutil.ignore_patterns(
            ".git", "__pycache__", "*.egg-info", "build", "dist", ".venv", ".ci-venv", "mutants", ".hypothesis"))
        return dest
    for name in filter(None, listed):
        source, target = ROOT / name, dest / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted, not yet committed
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    return dest


def _running_site_dirs() -> list[str]:
    """The site directories of the interpreter running the tests, in its sys.path order: a
    venv's own site-packages (and the base interpreter's, where that venv was made with
    --system-site-packages), the user site, Debian's dist-packages."""
    names = ("site-packages", "dist-packages")
    dirs = [p for p in sys.path if p and Path(p).name in names]
    dirs += site.getsitepackages() + [sysconfig.get_paths()[key] for key in ("purelib", "platlib")]
    return [d for d in dict.fromkeys(os.path.abspath(d) for d in dirs) if os.path.isdir(d)]


def _see_running_packages(python: Path) -> None:
    """Give the venv at `python` the running interpreter's packages, behind its own."""
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True, env={"PATH": os.environ.get("PATH", "")}
                             ).stdout.strip()
    own = Path(purelib)
    dirs = [d for d in _running_site_dirs() if Path(d) != own]
    assert dirs, sys.path
    # an `import` line of a .pth file runs at startup; addsitedir appends (behind the venv's own
    # site-packages) and reads that directory's .pth files, as --system-site-packages would
    (own / "_running_interpreter_site.pth").write_text(
        "import site; " + "; ".join(f"site.addsitedir({d!r})" for d in dirs) + "\n")


def _user_env(tmp: Path, venv: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CI", "VIRTUAL_ENV", "PYTEST_ADDOPTS")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["GEOMETRY_CHECKS_CACHE"] = str(tmp / "measurement-cache")  # not the user's cache
    env["HF_HUB_OFFLINE"] = "1"
    env["MPLBACKEND"] = "Agg"
    return env


def _snapshot(directory: Path) -> dict:
    """Every file of the installed package but bytecode caches: (size, mtime)."""
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, user env, empty work dir, dist dir, installed package dir)."""
    tmp = tmp_path_factory.mktemp("package")
    source = _source_copy(tmp / "source")
    dist = tmp / "dist"
    # `python -m build` makes the sdist, then the wheel from the sdist: the wheel proves the sdist
    # holds what the build needs. --no-isolation: setuptools comes from the test extra (no index).
    proc = _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, source], tmp, None)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    venv = tmp / "venv"
    proc = _run([sys.executable, "-m", "venv", venv], tmp, None)
    assert proc.returncode == 0, proc.stderr
    python = venv / "bin" / "python"
    _see_running_packages(python)
    wheel = next(dist.glob("*.whl"))
    # --force-reinstall: pip would take a system install of the same version (an editable clone)
    # for this one; in a venv it installs beside it and never touches what lies outside the venv.
    proc = _run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall", "--disable-pip-version-check",
                 wheel], tmp, None)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    work = tmp / "work"
    work.mkdir()
    env = _user_env(tmp, venv)
    where = _run([python, "-c", "import geometry_checks; print(geometry_checks.__file__)"], work, env)
    package = Path(where.stdout.strip()).parent
    yield python, env, work, dist, package


def test_sdist_and_wheel_pass_twine_and_carry_the_data(installed):
    _, _, _, dist, _ = installed
    files = sorted(dist.iterdir())
    assert [p.suffix for p in files] == [".whl", ".gz"], files
    proc = _run([sys.executable, "-m", "twine", "check", "--strict", *files], dist, None)
    assert proc.returncode == 0 and proc.stdout.count("PASSED") == 2, proc.stdout + proc.stderr
    from geometry_checks import __version__

    with zipfile.ZipFile(next(dist.glob("*.whl"))) as wheel:
        names = wheel.namelist()
        entry_points = wheel.read(f"geometry_checks-{__version__}.dist-info/entry_points.txt").decode()
    assert set(DATA) <= set(names), sorted(set(DATA) - set(names))
    assert "[pytest11]\ngeometry_checks.plugin = geometry_checks.plugin" in entry_points
    assert not [n for n in names if n.startswith(("tests/", "baselines/", "fixtures/", "benchmarks/"))]
    with tarfile.open(next(dist.glob("*.tar.gz"))) as sdist:
        members = [m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name]
    assert set(DATA) <= set(members)
    # the top-level links would be a second copy of the package data in the archive
    assert not [m for m in members if m.split("/")[0] in ("baselines", "fixtures")]


def test_the_venv_imports_the_wheel_not_the_checkout(installed):
    python, env, work, _, package = installed
    assert package.parent.parent.parent.parent == python.parent.parent, package  # venv/lib/pythonX.Y/site-packages
    assert ROOT not in package.parents


def test_the_venv_sees_the_packages_of_the_interpreter_running_the_tests(installed):
    """The same torch and transformers as this process: run from a venv, not the base
    interpreter's (which may have none: issue 24's `No module named 'torch'`)."""
    import torch
    import transformers

    python, env, work, _, _ = installed
    proc = _run([python, "-c", "import torch, transformers; print(torch.__file__); print(transformers.__file__)"],
                work, env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [torch.__file__, transformers.__file__], proc.stdout


def test_report_measure_and_pytest_pyargs_from_an_empty_directory(installed):
    python, env, work, _, package = installed
    before = _snapshot(package)
    run = work / "report-measure-pytest"
    run.mkdir()
    geometry_checks = python.parent / "geometry-checks"

    proc = _run([geometry_checks, "report", "--model", "minilm", "--out", "f"], run, env)
    assert proc.returncode == 0, proc.stderr
    assert (run / "f" / "findings.md").is_file() and proc.stdout.splitlines()[-1].startswith(
        "wrote f/findings.md and findings.json beside it: ")

    (run / "mine.txt").write_text("The cat sat on the mat\nStock markets fell sharply today\n"
                                  "A storm hit the coast overnight\n")
    proc = _run([geometry_checks, "measure", "--model", "minilm", "--sentences", "mine.txt", "--out", "m.json"],
                run, env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "m.json").read_text())["sentence_set"] == "mine"

    proc = _run([python, "-m", "pytest", "--pyargs", "geometry_checks", "-m", "minilm"], run, env)
    assert proc.returncode == 0, proc.stdout[-3000:]
    summary = proc.stdout.strip().splitlines()[-1]
    # "xfailed" (an inconclusive or expected failure) is no failure: match the counts as words
    assert " passed" in summary and not re.search(r"\b\d+ (failed|errors?)\b", summary), summary
    assert int(summary.split(" passed")[0].split()[-1]) >= 40, summary  # dense claims + the recorded gate

    # the checks are importable in site-packages, doctests included (a project with --doctest-modules)
    proc = _run([python, "-m", "pytest", "--pyargs", "geometry_checks", "--doctest-modules", "--collect-only",
                 "-q"], run, env)
    assert proc.returncode == 0 and "error" not in proc.stdout.splitlines()[-1], proc.stdout[-3000:]

    # the installed package's recorded baselines are never written: refused with one line
    proc = _run([python, "-m", "pytest", "--pyargs", "geometry_checks", "-m", "minilm", "--update-baselines"],
                run, env)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pass --recorded-dir DIR" in lines[0], proc.stderr
    assert _snapshot(package) == before  # nothing under site-packages changed (bytecode caches aside)
    # what it was asked to write (beside the hidden caches of pytest and its plugins: .pytest_cache, ...)
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == ["f", "m.json", "mine.txt"]


def test_options_in_space_form_take_paths_outside_the_checkout(installed, tmp_path):
    """pytest knows the plugin's options before it picks its root (the entry point), so
    `--sentences FILE --recorded-dir DIR` work with paths anywhere."""
    python, env, work, _, _ = installed
    sentences = tmp_path / "mine.json"
    sentences.write_text(json.dumps({"sentences": ["The cat sat on the mat", "Stock markets fell sharply today",
                                                   "A storm hit the coast overnight"]}))
    args = [python, "-m", "pytest", "--pyargs", "geometry_checks", "-m", "minilm", "-k", "recorded",
            "--sentences", sentences, "--recorded-dir", tmp_path / "rec"]
    proc = _run([*args, "--update-baselines"], work, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert (tmp_path / "rec" / "minilm" / "mine.json").is_file()
    proc = _run(args, work, env)
    assert proc.returncode == 0 and " passed" in proc.stdout.splitlines()[-1], proc.stdout[-3000:]


def test_checkout_with_the_entry_point_installed_registers_the_plugin_once(installed, tmp_path):
    """As an editable install: the entry point and conftest.py's pytest_plugins name the same
    plugin, which pytest registers once; options in space form still work in the checkout."""
    python, env, _, _, _ = installed
    sentences = tmp_path / "mine.txt"
    sentences.write_text("The cat sat on the mat\nStock markets fell sharply today\n")
    # no path argument (as `pytest -m minilm --sentences /tmp/mine.txt`): without the entry point
    # pytest would root itself in /tmp, never read conftest.py, and call the options unknown.
    # (pytest still roots itself in /tmp here, missing pytest.ini: it picks its root before it
    # loads any plugin. The README says so and recommends `--sentences=/tmp/...` in a clone.)
    proc = _run([python, "-m", "pytest", "-m", "minilm", "-k", "minilm-recorded-baseline", "-p", "no:randomly",
                 "--sentences", sentences, "--recorded-dir", tmp_path / "rec", "--update-baselines"], ROOT, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert (tmp_path / "rec" / "minilm" / "mine.json").is_file()


def test_the_gate_on_your_own_model(installed):
    """The README's recipe, in an empty directory with only the package installed: record a
    model's geometry, pass on the same weights, fail naming metric and depth on 1% noise in
    one FFN matrix."""
    import torch
    from safetensors.torch import load_file, save_file

    from geometry_checks.loader import bundled_minilm_dir

    python, env, work, _, _ = installed
    run = work / "own-model"
    shutil.copytree(bundled_minilm_dir(), run / "my-model")
    command = [python, "-m", "pytest", "--pyargs", "geometry_checks", "-m", "any_model", "--model", "./my-model",
               "--recorded-dir", "./geometry-baselines"]

    proc = _run([*command, "--update-baselines"], run, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert "geometry-checks: recorded geometry-baselines/my-model/core.json" in proc.stdout
    recorded = json.loads((run / "geometry-baselines" / "my-model" / "core.json").read_text())
    from geometry_checks.fetch import weights_sha256

    assert recorded["provenance"]["weights_sha256"] == weights_sha256(run / "my-model")
    assert recorded["provenance"]["sentence_set"] == "core" and recorded["provenance"]["torch"]

    proc = _run(command, run, env)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "my-model-recorded-intra_sentence_cosine" not in proc.stdout  # no failure listed
    passed = int(proc.stdout.strip().splitlines()[-1].split(" passed")[0].split()[-1])
    assert passed > len(recorded["curves"]), proc.stdout[-500:]  # every recorded metric ran

    # 1% noise (of the matrix's own sd) in block 3's FFN output matrix, seeded
    weights = run / "my-model" / "model.safetensors"
    tensors = load_file(weights)
    key = "encoder.layer.3.output.dense.weight"
    w = tensors[key].double()
    noise = torch.randn(w.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    tensors[key] = (w + noise * (0.01 * w.std())).float()
    save_file(tensors, weights, metadata={"format": "pt"})

    proc = _run(command, run, env)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "FAILED checks/test_recorded.py::test_recorded[./my-model-recorded-intra_sentence_cosine]" in proc.stdout
    assert "./my-model / intra_sentence_cosine: " in proc.stdout and "worst at depth " in proc.stdout
    # the command it names is the one that re-records here (a user copies it)
    assert ("regenerate with `pytest --pyargs geometry_checks -m any_model --model ./my-model --update-baselines "
            "--recorded-dir ./geometry-baselines`") in proc.stdout
