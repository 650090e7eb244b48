"""pytest wiring: options, the session Lab, verdict recording and the findings table.

Thin by design: checks live in `claims`, numbers in `measure`/`metrics`, tables in
`report`; the test modules that run them are `geometry_checks/checks/`. Registered by the
`pytest11` entry point `geometry_checks.plugin` wherever the package is installed (so pytest
knows the options before it picks its root directory, and `pytest --pyargs geometry_checks`
works from any directory), and by the repository's conftest.py under the same name for a
clone on PYTHONPATH: pytest registers it once when both apply.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from pathlib import Path

import pytest

from .errors import InputError
from .paths import DEFAULT_SENTENCES
from .registry import MODELS

# Loaded by every pytest run where the package is installed (the entry point): this module
# imports no torch at import time; the fixtures import the Lab when a check asks for one.

VERDICT_KEY = pytest.StashKey[object]()
ROWS_KEY = pytest.StashKey[list]()
# model -> {"registry": line, "recorded": line}: provenance warnings, one line per model at the end.
NOTES_KEY = pytest.StashKey[dict]()
# recorded baselines this session wrote (--update-baselines).
WRITTEN_KEY = pytest.StashKey[list]()
# model -> the registered name its verdicts take (verdict_identity)
IDENTITY_KEY = pytest.StashKey[dict]()
# where --findings-md wrote, and its summary lines, for the terminal summary
FINDINGS_KEY = pytest.StashKey[list]()
# pytest-xdist: the controller's share of what the workers found (the workers run the tests; the
# controller prints the summary and writes --findings-md). See _worker_output / pytest_testnodedown.
XDIST_ROWS_KEY = pytest.StashKey[list]()
XDIST_ORDER_KEY = pytest.StashKey[dict]()
WORKER_OUTPUT = "geometry_checks"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("geometry-checks")
    group.addoption("--model-path", action="append", default=[], metavar="NAME=DIR",
                    help="load registered model NAME from local directory DIR (repeatable)")
    group.addoption("--model", action="append", default=[], metavar="HUB_ID_OR_DIR",
                    help="also run the model-agnostic (dense) checks on this model (repeatable)")
    group.addoption("--device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="where to run the forward passes (auto: CUDA when available)")
    group.addoption("--sentences", default=str(DEFAULT_SENTENCES), metavar="FILE",
                    help="sentence file the checks measure (default fixtures/core.json)")
    group.addoption("--require-models", action="store_true",
                    help="fail, instead of skip, checks whose model weights are not found")
    group.addoption("--update-baselines", action="store_true",
                    help="rewrite the recorded baselines of the selected models")
    group.addoption("--recorded-dir", default=None, metavar="DIR",
                    help="where recorded baselines are read and written (default baselines/recorded)")
    group.addoption("--findings-md", metavar="PATH", help="write this run's findings table (markdown)")
    group.addoption("--no-truncate", action="store_true",
                    help="reject a sentence longer than the model's token limit instead of truncating it")
    group.addoption("--latest-revision", action="store_true",
                    help="load each hub model's latest revision instead of the registry's pinned one "
                         "(implies --allow-download)")
    group.addoption("--allow-download", action="store_true",
                    help="download registered models missing from the HF cache (default: never)")


def _model_paths(config: pytest.Config) -> dict[str, str]:
    paths = {}
    for item in config.getoption("--model-path"):
        name, sep, directory = item.partition("=")
        if not sep or not name or not directory:
            raise pytest.UsageError(f"--model-path expects NAME=DIR, got {item!r}")
        if name not in MODELS:
            raise pytest.UsageError(f"--model-path {item}: unknown model {name!r} (registered: {', '.join(MODELS)})")
        if not Path(directory).expanduser().is_dir():
            raise pytest.UsageError(f"--model-path {item}: directory {directory} does not exist")
        paths[name] = directory
    return paths


def verdict_identity(config: pytest.Config, model: str) -> str:
    """The name `model`'s expected failures are looked up under (lab.identity_for): a
    `--model=DIR` holding a registered model's weights (sha256) is that model. Decided at
    collection (the xfail marks), without loading the model; once per model and session."""
    cache = config.stash.setdefault(IDENTITY_KEY, {})
    if model not in cache:
        if model in MODELS:
            cache[model] = model
        else:
            from .lab import identity_for

            try:
                paths = _model_paths(config)
            except pytest.UsageError:
                paths = {}
            cache[model] = identity_for(model, paths)
    return cache[model]


def _markers() -> dict[str, str]:
    """The markers of the checks, registered by the plugin itself (they exist outside this repository)."""
    markers = {spec.marker: f"checks on {spec.hub_id}" for spec in MODELS.values()}
    markers["any_model"] = "model-agnostic checks on the model given with --model"
    markers["thesis"] = ("the thesis verdict per dense claim: minilm, mpnet, smollm2, gemma3 and their untrained "
                         "controls (issue 23)")
    return markers


def pytest_configure(config: pytest.Config) -> None:
    for marker, text in _markers().items():
        config.addinivalue_line("markers", f"{marker}: {text}")
    if config.getoption("--update-baselines") and not config.getoption("--recorded-dir"):
        from .paths import RECORDED, in_checkout

        if not in_checkout():
            # An installed package's recorded baselines are read-only: site-packages is never written.
            raise pytest.UsageError(f"--update-baselines would write into the installed package ({RECORDED}); "
                                    "pass --recorded-dir DIR to record the baselines there")
    config.stash[ROWS_KEY] = []
    config.stash[NOTES_KEY] = {}
    config.stash[WRITTEN_KEY] = []
    config.stash[XDIST_ROWS_KEY] = []
    if config.getoption("--latest-revision"):
        from . import registry

        for name, spec in list(registry.MODELS.items()):
            if spec.source == "hub":
                registry.MODELS[name] = spec.replace(revision=None)
    # Validate eagerly so a bad flag is one usage line, not an error per test.
    paths = _model_paths(config)
    findings = config.getoption("--findings-md")
    if findings and not hasattr(config, "workerinput"):  # checked at start, not after the run (issue 14)
        from .outputs import check_file

        if Path(findings).suffix.lower() == ".json":
            raise pytest.UsageError(f"--findings-md {findings}: give a markdown path (its findings.json twin is "
                                    "written beside it, with the suffix .json)")
        try:
            for target in (Path(findings), Path(findings).with_suffix(".json")):
                check_file(target, "--findings-md", [config.getoption("--sentences")])
        except InputError as exc:
            raise pytest.UsageError(str(exc)) from None
    recorded = config.getoption("--recorded-dir")
    if recorded and config.getoption("--update-baselines") and os.path.lexists(recorded) \
            and not Path(recorded).is_dir():
        raise pytest.UsageError(f"--recorded-dir {recorded}: is not a directory")
    from . import baselines

    baselines.set_run_options(_run_options(config, paths))


def _run_options(config: pytest.Config, paths: dict[str, str]) -> str:
    """The options a "regenerate with" hint must repeat to re-record what this run reads;
    --model-path in the `=` form, as every hint gives it (README, "Paths in the options")."""
    import shlex

    extra = ""
    sentences = config.getoption("--sentences")
    if Path(sentences).resolve() != DEFAULT_SENTENCES.resolve():
        extra += f" --sentences {shlex.quote(sentences)}"
    if config.getoption("--recorded-dir"):
        extra += f" --recorded-dir {shlex.quote(config.getoption('--recorded-dir'))}"
    for name, directory in paths.items():
        extra += f" {shlex.quote(f'--model-path={name}={directory}')}"  # the `=` form (README)
    return extra


@pytest.fixture(scope="session")
def lab(pytestconfig: pytest.Config):
    """The session's models and measurements (read-only; one forward pass per model and set)."""
    from .lab import Lab

    try:
        return Lab(_model_paths(pytestconfig), pytestconfig.getoption("--device"),
                   sentences=pytestconfig.getoption("--sentences"),
                   # --findings-md: a tqdm line per model and step (measurement_of shows it)
                   progress=bool(pytestconfig.getoption("--findings-md")) and not hasattr(pytestconfig, "workerinput"),
                   truncate=not pytestconfig.getoption("--no-truncate"),
                   allow_download=pytestconfig.getoption("--allow-download")
                   or pytestconfig.getoption("--latest-revision"))
    except InputError as exc:
        pytest.exit(f"geometry-checks: {exc}", returncode=2)


@pytest.fixture(scope="session")
def measurement_of(lab, pytestconfig: pytest.Config):
    """get(model) -> Measurement; skips (or fails with --require-models) when weights are missing."""
    from .lab import ModelNotAvailable

    require = pytestconfig.getoption("--require-models")

    def get(model: str):
        try:
            with warnings.catch_warnings():
                # loader.load warns when the weights differ from the registry's; here that
                # becomes one line of the terminal summary (_note_weights), not a warning entry.
                warnings.filterwarnings("ignore", message=r".*weights sha256 .* differs from the registry")
                with _progress_shown(pytestconfig, lab, model):
                    result = lab.measurement(model)
            _note_weights(pytestconfig, model, result)
            return result
        except ModelNotAvailable as exc:
            if require:
                pytest.fail(f"--require-models: {exc}", pytrace=False)
            spec = MODELS.get(model)
            if _in_ci() and spec is not None and spec.installed:
                # scripts/install.sh installs these weights (minilm's package, mpnet's fetch):
                # in CI their absence is a broken install, never a skipped check. Weights only
                # some jobs fetch (smollm2, gemma3: registry.ModelSpec.installed) skip with the
                # fetch hint where a job did not fetch them.
                pytest.fail(f"CI=true: {exc}", pytrace=False)
            pytest.skip(str(exc))
        except InputError as exc:
            pytest.fail(f"geometry-checks: {exc}", pytrace=False)

    return get


@contextlib.contextmanager
def _progress_shown(config: pytest.Config, lab, model: str):
    """While a model is measured for the first time in a --findings-md run on a terminal:
    pytest's output capture suspended, so that the Lab's progress lines (lab.progress_step)
    reach the terminal, on a line of their own. Elsewhere (a log, CI: pytest's terminal
    reporter is not on a tty) nothing changes and nothing is written."""
    capman = config.pluginmanager.getplugin("capturemanager")
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if not lab.progress or capman is None or reporter is None or not getattr(reporter, "isatty", False) \
            or lab.has_measurement(model):
        yield
        return
    from transformers.utils import logging as hf_logging

    hf_bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # our lines only, as `geometry-checks` shows them
    try:
        with capman.global_and_fixture_disabled():
            if sys.stderr.isatty():
                reporter.ensure_newline()
            yield
    finally:
        if hf_bars:
            hf_logging.enable_progress_bar()


def _note_weights(config: pytest.Config, model: str, measurement) -> None:
    spec = MODELS.get(model)
    sha = measurement.provenance.get("weights_sha256")
    if spec is None or not spec.weights_sha256 or not sha or sha == spec.weights_sha256:
        return
    config.stash[NOTES_KEY].setdefault(model, {})["registry"] = (
        f"{model}: weights sha256 {sha[:12]}… differ from the registry's {spec.weights_sha256[:12]}… "
        f"({spec.hub_id}@{(spec.revision or 'unpinned')[:12]}): measuring another checkpoint"
    )


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def recorded_getter(update: bool, root: Path, notes: dict, written: list, extra_args: str = ""):
    """The function behind the `recorded_baseline` fixture (separate, so tests can drive it)."""
    from . import baselines as B

    loaded: dict = {}

    def get(measurement, given: str | None = None):
        # given: the model as the run named it (`--model ./my-model`), for the command in messages
        model, name = measurement.model, measurement.sentence_set
        path = B.path_for(model, name, root)
        if (model, name) not in loaded:
            if update:
                try:
                    written.append(B.record(measurement, root))
                except InputError as exc:  # an unwritable --recorded-dir: one line, not a traceback
                    pytest.fail(f"geometry-checks: {exc}", pytrace=False)
            try:
                data = B.load_recorded(model, name, root)
            except InputError as exc:
                data = exc
            loaded[(model, name)] = data
            if isinstance(data, dict):
                line = B.provenance_warning(model, path, B.provenance_of(measurement), data["provenance"])
                if line:
                    notes.setdefault(model, {})["recorded"] = line
        data = loaded[(model, name)]
        if isinstance(data, InputError):
            pytest.fail(f"geometry-checks: {data}", pytrace=False)
        if data is None:
            message = (f"no recorded baseline for {model} on sentence set {name!r} ({path}): "
                       f"create it with `{B.regenerate_command(given or model)}{extra_args}` and commit it")
            if _in_ci():
                pytest.fail(f"CI=true: {message}", pytrace=False)
            pytest.skip(message)
        return data

    return get


def recorded_root(config: pytest.Config) -> Path:
    from .baselines import RECORDED

    return Path(config.getoption("--recorded-dir") or RECORDED)


@pytest.fixture(scope="session")
def recorded_baseline(pytestconfig: pytest.Config):
    """get(measurement) -> the recorded baseline of its (model, sentence set) (baselines.load_recorded).

    With --update-baselines it first records the measurement (once per model and set; an
    atomic write under baselines/recorded/, never baselines/published/). A missing baseline
    fails when CI=true and skips otherwise, both naming the command that creates it; a
    corrupt one fails with one line. A provenance difference from the recorded baseline
    (another checkpoint, another torch) is one warning line in the terminal summary.
    """
    # the hints carry the run's own options through baselines.regenerate_command (set_run_options)
    return recorded_getter(pytestconfig.getoption("--update-baselines"), recorded_root(pytestconfig),
                           pytestconfig.stash[NOTES_KEY], pytestconfig.stash[WRITTEN_KEY])


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    for line in config.stash.get(FINDINGS_KEY, []):
        terminalreporter.write_line(f"geometry-checks: {line}")
    for path in config.stash.get(WRITTEN_KEY, []):
        terminalreporter.write_line(f"geometry-checks: recorded {path}")
    for notes in config.stash.get(NOTES_KEY, {}).values():
        line = notes.get("recorded") or notes.get("registry")
        terminalreporter.write_line(f"WARNING geometry-checks: {line}", yellow=True)


@pytest.fixture
def record_verdict(request: pytest.FixtureRequest):
    """Attach a claim verdict to the running test, for the findings table."""

    def record(verdict) -> None:
        request.node.stash[VERDICT_KEY] = verdict

    return record


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.when == "call" or (report.when == "setup" and report.skipped):
        claim = getattr(item, "callspec", None) and item.callspec.params.get("claim")
        if claim is not None:
            reason = ""
            if report.skipped and isinstance(report.longrepr, tuple):
                reason = report.longrepr[2].removeprefix("Skipped: ")
            elif report.failed and not item.stash.get(VERDICT_KEY, None):
                reason = report.longreprtext.strip().splitlines()[-1] if report.longreprtext else ""
            outcome = "xfailed" if hasattr(report, "wasxfail") and report.skipped else report.outcome
            if hasattr(report, "wasxfail") and report.passed:
                outcome = "xpassed"
            item.config.stash[ROWS_KEY].append({
                "nodeid": item.nodeid,
                "claim": claim,
                "model": item.callspec.params.get("model", "+".join(getattr(claim, "models", ()))),
                "outcome": outcome,
                "verdict": item.stash.get(VERDICT_KEY, None),
                "reason": reason or getattr(report, "wasxfail", ""),
                # the getter the check used: lets the report add the model's own pooling (cached)
                "get": getattr(item, "funcargs", {}).get("measurement_of"),
            })
    return report


# --- pytest-xdist (issue 24): the workers' records reach the controller ----------------------
# Under `pytest -n N` each worker runs its tests and holds their records and its Lab; the
# controller runs no test but prints the summary and writes --findings-md. So each worker turns
# its records into findings rows (rows_from_pytest needs the worker's measurements) and sends
# them, with the baselines it recorded and its provenance notes, in xdist's `workeroutput` (plain
# data only). The controller sorts the rows into collection order, which is what a single-process
# run writes, so findings.md does not depend on which worker ran what.


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _worker_output(config: pytest.Config) -> None:
    rows = []
    if config.getoption("--findings-md"):
        from .report import rows_from_pytest

        records = config.stash[ROWS_KEY]
        rows = [[r["nodeid"], row] for r, row in zip(records, rows_from_pytest(records))]
    # execnet carries only plain data: a JSON round trip makes sure (findings.json is JSON anyway)
    config.workeroutput[WORKER_OUTPUT] = json.loads(json.dumps({
        "rows": rows,
        "written": [str(p) for p in config.stash[WRITTEN_KEY]],
        "notes": config.stash[NOTES_KEY],
    }, default=str))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids) -> None:
    """Controller: every worker collects the same items; their order orders the rows."""
    if XDIST_ORDER_KEY not in node.config.stash:
        node.config.stash[XDIST_ORDER_KEY] = {nodeid: i for i, nodeid in enumerate(ids)}


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """Controller: a worker finished; take what it found (nothing if it crashed)."""
    out = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT)
    if not out:
        return
    config = node.config
    config.stash[XDIST_ROWS_KEY].extend(tuple(pair) for pair in out["rows"])
    config.stash[WRITTEN_KEY].extend(Path(p) for p in out["written"])
    for model, notes in out["notes"].items():
        config.stash[NOTES_KEY].setdefault(model, {}).update(notes)


def _findings_rows(config: pytest.Config) -> list[dict]:
    from .report import rows_from_pytest

    rows = rows_from_pytest(config.stash[ROWS_KEY])  # a single-process run's (none on a controller)
    order = config.stash.get(XDIST_ORDER_KEY, {})
    pairs = sorted(config.stash[XDIST_ROWS_KEY], key=lambda pair: (order.get(pair[0], len(order)), pair[0]))
    return rows + [row for _, row in pairs]
# --- end pytest-xdist ----------------------------------------------------------------------------


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _is_worker(session.config):
        _worker_output(session.config)
        return
    path = session.config.getoption("--findings-md")
    if not path:
        return
    from .report import model_summaries, summary_counts, summary_text, write_findings

    try:
        rows = _findings_rows(session.config)
        write_findings(rows, Path(path))
        # said in the terminal summary (issue 24): one line per model and where it wrote
        session.config.stash[FINDINGS_KEY] = [
            *model_summaries(rows),
            f"wrote {path} and {Path(path).with_suffix('.json')}: {len(rows)} checks: "
            f"{summary_text(summary_counts(rows))}"]
    except InputError as exc:  # one line, and pytest's own summary still follows
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        line = f"geometry-checks: error: {exc}"
        if reporter is not None:
            reporter.write_line(line, red=True)
        else:
            print(line, file=sys.stderr)
        session.exitstatus = pytest.ExitCode.INTERNAL_ERROR if not session.exitstatus else session.exitstatus
