"""The regression gate: each model's session measurement against its recorded baseline.

`test_recorded` is one test per recorded metric, `<model>-recorded-<metric>` (marked with
the model's marker, so `pytest -m minilm` runs MiniLM's), plus `<model>-recorded-baseline`:
the file itself (missing: fails when CI=true, skips locally with the command that creates
it; corrupt: one line; a metric measured but not recorded). Every registered model has
them, and so does each `--model` (marked `any_model`; its baseline is
`<recorded dir>/<folder or hub name>/<sentence set>.json`): a user's own model is gated with

    pytest --pyargs geometry_checks -m any_model --model ./my-model --recorded-dir ./geometry-baselines

after one run with `--update-baselines`. The behaviour of geometry_checks/baselines.py and
of the `recorded_baseline` fixture is pinned by the repository's tests/test_baselines.py.
"""
from __future__ import annotations

import pytest

from geometry_checks import baselines as B
from geometry_checks.errors import InputError
from geometry_checks.plugin import recorded_root
from geometry_checks.registry import MODELS
from geometry_checks.sentences import load_sentence_set


def _models(config) -> list[tuple[str, str, str]]:
    """(model as given, name its baseline is filed under, marker): registered models, then each --model."""
    from geometry_checks.loader import resolve

    found = [(model, model, spec.marker) for model, spec in MODELS.items()]
    for model in dict.fromkeys(config.getoption("--model")):
        if model in MODELS:
            continue  # already there, under its own marker
        try:
            name = resolve(model).spec.name  # reads config.json only, never the weights
        except InputError:
            name = None  # the `<model>-recorded-baseline` test fails with the one-line reason
        found.append((model, name, "any_model"))
    return found


def _recorded_params(config):
    try:
        set_name = load_sentence_set(config.getoption("--sentences")).name
    except InputError:
        set_name = "core"  # the lab fixture reports the bad file
    root = recorded_root(config)
    for model, name, marker in _models(config):
        mark = getattr(pytest.mark, marker)
        yield pytest.param(model, None, marks=mark, id=f"{model}-recorded-baseline")
        try:
            data = B.load_recorded(name, set_name, root) if name else None
        except InputError:
            data = None  # `<model>-recorded-baseline` fails with the one-line reason
        for metric in B.metric_names(data or {}):
            yield pytest.param(model, metric, marks=mark, id=f"{model}-recorded-{metric}")


def pytest_generate_tests(metafunc):
    if metafunc.function.__name__ == "test_recorded":
        metafunc.parametrize(("model", "metric"), list(_recorded_params(metafunc.config)))


def test_recorded(model, metric, measurement_of, recorded_baseline):
    measurement = measurement_of(model)
    recorded = recorded_baseline(measurement, model)
    measured = B.recordable(measurement)
    if metric is None:
        missing = B.unrecorded(measured, recorded)
        if missing:
            pytest.fail(f"{model}: measured but not in the recorded baseline: {', '.join(missing)}; "
                        f"regenerate with `{B.regenerate_command(model)}`", pytrace=False)
        return
    result = B.compare_recorded(model, metric, measured, recorded)
    if not result.passed:
        pytest.fail(result.message, pytrace=False)
