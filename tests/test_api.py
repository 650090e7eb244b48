"""The public API: what __all__ names imports, lazily, and docs/api.md's example runs."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

import geometry_checks

ROOT = Path(__file__).resolve().parent.parent


def test_every_public_name_imports():
    for name in geometry_checks.__all__:
        assert getattr(geometry_checks, name) is not None, name
    from geometry_checks import LayerStates, Measurement, capture, measure, metrics

    assert capture.LayerStates is LayerStates and measure.Measurement is Measurement
    assert callable(capture.capture) and callable(measure.measure) and callable(metrics.intra_sentence_cosine)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        geometry_checks.nothing  # noqa: B018


def test_import_and_cli_help_do_not_load_torch():
    """`import geometry_checks`, the plugin and `geometry-checks --help` stay light (torch takes seconds)."""
    code = ("import sys, geometry_checks, geometry_checks.plugin, geometry_checks.baselines\n"
            "from geometry_checks import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"


def _example() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "docs" / "api.md").read_text(), flags=re.M | re.S)
    assert len(blocks) == 1, "docs/api.md should hold exactly one python block: the example"
    return blocks[0]


def test_the_example_is_about_ten_lines():
    assert len([line for line in _example().splitlines() if line.strip()]) <= 12


@pytest.mark.minilm
def test_the_example_in_docs_api_md_runs():
    namespace: dict = {}
    exec(compile(_example(), "docs/api.md", "exec"), namespace)
    tests = [f for name, f in namespace.items() if name.startswith("test_") and callable(f)]
    assert tests
    for test in tests:
        test()
