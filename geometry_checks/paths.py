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

import os
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


# The suite's cache (measurements, fetched wheels, prepared models): $GEOMETRY_CHECKS_CACHE,
# or the user cache directory. A value in CACHE_OFF turns the measurement cache off (cache.py)
# but not the models' (a prepared model is not optional).
CACHE_ENV = "GEOMETRY_CHECKS_CACHE"
CACHE_OFF = ("off", "0", "none", "false", "no")


def cache_root() -> Path:
    """The suite's cache root, for what is not a Measurement (fetched wheels, prepared models):
    $GEOMETRY_CHECKS_CACHE when it names a directory, else the user cache directory (also
    when the variable turns the measurement cache off)."""
    value = os.environ.get(CACHE_ENV, "").strip()
    if value and value.lower() not in CACHE_OFF:
        return Path(value).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("geometry-checks"))
