"""Where the suite's own data lives: package data, read through importlib.resources.

The published figures, the recorded baselines and the sentence sets ship inside the
package (`geometry_checks/data/`), so an installed wheel has them. In a checkout the
top-level `baselines/` and `fixtures/` are symbolic links to these folders: one copy,
nothing that can drift.

`in_checkout()` tells a source checkout (editable install or a clone on PYTHONPATH),
whose recorded baselines may be rewritten with `--update-baselines`, from an installed
package in site-packages, which is never written to.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

DATA = Path(str(files("geometry_checks") / "data"))
BASELINES = DATA / "baselines"
PUBLISHED = BASELINES / "published"
RECORDED = BASELINES / "recorded"
FIXTURES = DATA / "fixtures"
DEFAULT_SENTENCES = FIXTURES / "core.json"
CHECKOUT = DATA.parent.parent


def in_checkout() -> bool:
    """True when the package is a source checkout (its repository files are beside it)."""
    return (CHECKOUT / "pyproject.toml").is_file() and (CHECKOUT / "geometry_checks" / "data").is_dir() \
        and (CHECKOUT / "conftest.py").is_file()
