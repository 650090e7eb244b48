"""Writing results without destroying anything: the one place every writer goes through.

Rules (docs/reliability.md):

- `check_file(path, what, inputs)` runs at start, before any model loads: the target must
  be absent or a regular file (a symbolic link, directory, device or FIFO is refused, as is
  a target that is one of the run's input files), and the nearest existing ancestor must
  be a directory that can hold files (probed with a temporary file that is removed at once).
- `write_text(path, text)` writes a temporary file beside the target, fsyncs it and
  renames it over the target (`os.replace`), re-checking the target first; on any failure
  the temporary file and any directory it created are removed and one InputError is raised.
- `check_dir` / `OwnedDir` do the same for a directory that a command owns (`report --out`).

Every problem is an InputError with a one-line message.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Iterable

from .errors import InputError

PREFIX = ".geometry-checks-"  # temporary files and staging directories (removed on any failure)


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc) or exc.__class__.__name__


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _nearest_existing(path: Path) -> tuple[Path, list[Path]]:
    """(the nearest ancestor of path that exists, the missing directories below it, top first)."""
    missing = []
    parent = path.parent
    while not os.path.lexists(parent):
        missing.append(parent)
        if parent.parent == parent:
            break
        parent = parent.parent
    return parent, missing[::-1]


def _probe(directory: Path, what: str, target: Path) -> None:
    """Refuse a location that cannot hold files (a temporary file, removed at once)."""
    if not directory.is_dir():
        raise InputError(f"{what} {target}: {directory} is not a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=PREFIX, suffix=".probe", dir=directory)
    except OSError as exc:
        raise InputError(f"{what} {target}: cannot write in {directory} ({_why(exc)})") from None
    os.close(fd)
    os.unlink(tmp)


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def check_file(path: str | Path, what: str = "--out", inputs: Iterable[str | Path] = ()) -> Path:
    """Validate an output file path at start (see the module docstring); returns it as a Path."""
    path = Path(path).expanduser()
    if str(path) in ("", "."):
        raise InputError(f"{what}: an output file path is needed, got {str(path)!r}")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise InputError(f"{what} {path}: {_first_file_ancestor(path)} is a file, not a directory") from None
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot use it ({_why(exc)})") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise InputError(f"{what} {path}: is {_kind(st.st_mode)}; give the path of a regular file "
                         "(it is replaced only when it is one)")
    for source in inputs:
        if source and os.path.lexists(source) and _same(path, Path(source)):
            raise InputError(f"{what} {path}: is also an input of this run ({source}); give another path")
    parent, _ = _nearest_existing(path)
    if os.path.lexists(parent) and not parent.is_dir():
        raise InputError(f"{what} {path}: {parent} is a file, not a directory")
    _probe(parent, what, path)
    return path


def _first_file_ancestor(path: Path) -> Path:
    for parent in reversed(path.parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return path.parent


def write_text(path: str | Path, text: str, what: str = "--out", inputs: Iterable[str | Path] = ()) -> Path:
    """Write `text` to `path` atomically (temporary file beside it, fsync, os.replace).

    The target is checked again just before the rename; on any failure nothing is left
    behind (the temporary file and the directories this call created are removed)."""
    path = check_file(path, what, inputs)
    _, missing = _nearest_existing(path)
    created: list[Path] = []
    tmp = None
    try:
        for directory in missing:
            directory.mkdir()
            created.append(directory)
        fd, tmp = tempfile.mkstemp(prefix=PREFIX + path.name[:32] + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would make the result private
        st = os.lstat(path) if os.path.lexists(path) else None
        if st is not None and not stat.S_ISREG(st.st_mode):  # it changed since the check
            raise InputError(f"{what} {path}: is {_kind(st.st_mode)}; not replaced")
        os.replace(tmp, path)
        tmp = None
        return path
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot write ({_why(exc)})") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            for directory in reversed(created):
                try:
                    directory.rmdir()
                except OSError:
                    pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------- owned directories


def check_dir(path: str | Path, what: str = "--out", owned: Iterable[str] = (),
              inputs: Iterable[str | Path] = ()) -> Path:
    """Validate an output directory at start: absent, or a real directory (not a symlink)
    whose entries are all in `owned` (the files an earlier run of the same command wrote)
    or are leftovers of an interrupted run (PREFIX*). Anything else is refused, so that
    the command never deletes or mixes with files it did not write."""
    path = Path(path).expanduser()
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot use it ({_why(exc)})") from None
    for source in inputs:
        if source and os.path.lexists(source):
            src = Path(source).resolve()
            if src == path.resolve() or path.resolve() in src.parents:
                raise InputError(f"{what} {path}: holds an input of this run ({source}); give another directory")
    if st is None:
        parent, _ = _nearest_existing(path / "x")
        _probe(parent, what, path)
        return path
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"{what} {path}: is {_kind(st.st_mode)}, not a directory")
    owned = set(owned)
    foreign = sorted(e.name for e in os.scandir(path)
                     if e.name not in owned and not e.name.startswith(PREFIX))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise InputError(f"{what} {path}: holds files this command did not write ({shown}); "
                         "give an empty or new directory, or the directory of an earlier run")
    _probe(path, what, path)
    return path


def stage(directory: Path) -> Path:
    """A new staging directory inside `directory` (created if need be)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=PREFIX, dir=directory))
    except OSError as exc:
        raise InputError(f"{directory}: cannot create the output directory ({_why(exc)})") from None


def commit(staging: Path, directory: Path, files: Iterable[str], stale: Iterable[str]) -> None:
    """Move `files` from `staging` into `directory` (each an atomic rename over a regular file),
    remove the `stale` files of an earlier run that were not rewritten, then the staging
    directory and any leftover of an interrupted run."""
    files = list(files)
    try:
        for name in files:
            target = directory / name
            if os.path.lexists(target) and not stat.S_ISREG(os.lstat(target).st_mode):
                raise InputError(f"{target}: is {_kind(os.lstat(target).st_mode)}; not replaced")
            os.replace(staging / name, target)
        for name in set(stale) - set(files):
            target = directory / name
            if os.path.lexists(target) and stat.S_ISREG(os.lstat(target).st_mode):
                target.unlink()
        for entry in os.scandir(directory):
            if entry.name.startswith(PREFIX) and Path(entry.path) != staging:
                discard(Path(entry.path))
    except OSError as exc:
        raise InputError(f"{directory}: cannot write ({_why(exc)})") from None
    finally:
        discard(staging)


def discard(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            pass
