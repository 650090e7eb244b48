"""geometry-checks: layer-by-layer geometry of sentence-embedding models, as pytest checks.

The public API is what `__all__` names (docs/api.md); everything else may change:

- sentence sets (the suite's fixtures): `load_sentence_set`, `SentenceSet`, and
  `DEFAULT_SENTENCES`, the bundled `fixtures/core.json`;
- models and hidden states: `Lab` (load once, capture once, measure once), the `loader`
  module (`resolve`, `load`), the `capture` module (`capture(loaded, sentences) ->
  LayerStates`) and `LayerStates`;
- numbers: the `measure` module (`measure(states, sentences) -> Measurement`), the
  `result` module with `Measurement` (and its JSON), and `metrics` (pure tensor functions,
  tensors in, tensors out);
- errors: `InputError` (bad input, one line), `ModelNotAvailable` (weights not found).

The pytest fixtures (`lab`, `measurement_of`, `recorded_baseline`) and options come with
the plugin, which pytest loads wherever the package is installed: nothing to import.

Names are imported on first use, so `import geometry_checks` (and `geometry-checks --help`)
does not pay for torch.
"""
from __future__ import annotations

import importlib

# The one source of the version: pyproject.toml reads it ([tool.setuptools.dynamic]).
__version__ = "0.1.0"

_NAMES = {  # public name -> module that defines it
    "DEFAULT_SENTENCES": "paths",
    "SentenceSet": "sentences",
    "load_sentence_set": "sentences",
    "Lab": "lab",
    "ModelNotAvailable": "lab",
    "LayerStates": "capture",
    "Measurement": "result",
    "InputError": "errors",
}
_MODULES = ("capture", "loader", "measure", "metrics", "result")

__all__ = ["__version__", *_NAMES, *_MODULES]


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _NAMES:
        value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
