"""The checks of a model, shipped with the package so an installed copy can run them:
`pytest --pyargs geometry_checks -m minilm` (or `-m mxbai`, `-m any_model --model DIR`),
from any directory. The plugin (`geometry_checks.plugin`, a `pytest11` entry point) gives
them their options, fixtures and markers.

- `test_claims.py`: every claim as one parametrized check (article claims, dense claims).
- `test_recorded.py`: the regression gate, each model's measurement against its recorded
  baseline (`--update-baselines` records it, `--recorded-dir` says where).

The unit tests of this code stay in the repository's `tests/`.
"""
