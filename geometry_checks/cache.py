"""An on-disk cache of Measurements, so that measuring the same thing twice costs a file read.

Where: `$GEOMETRY_CHECKS_CACHE` (a directory; `off`, `0` or `none` turns the cache off),
else the user cache directory (`platformdirs.user_cache_dir("geometry-checks")`, e.g.
~/.cache/geometry-checks on Linux), subdirectory `measurements/`. `--no-cache` on the
command line bypasses it for one run. Deleting the directory is always safe.

Key: the sha256 of everything that decides the numbers (`key_fields`): the model's
registry entry (not its directory: a copy elsewhere hits; the served Measurement's
provenance gets the current location), its revision, the weights' sha256 and the sha256 of its
config and tokenizer files; the torch and transformers versions; dtype, device (CUDA
device name, or the CPU's vector ISA), intra-op thread count and the ISA-capping
environment variables; the sentence set's content hash and name; batch size, capture
method, poolings, the PCA token cap and seed, sublayers; and the metric code's version
(the sha256 of the source of `CODE_FILES`). A model that is not a local directory (a hub
ID still to download) is not cached.

Entries: one JSON file per key, written atomically (a temporary file in the same
directory, fsync, rename), holding the key, its fields, the Measurement and the sha256
of the Measurement's canonical JSON. An entry that does not parse, does not validate or
whose checksum does not match is reported with a warning, deleted and recomputed, never
used. docs/performance.md describes the cache for users.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

from . import loader
from .result import SCHEMA, Measurement
from .paths import CACHE_ENV, CACHE_OFF, cache_root  # noqa: F401 (cache_root: the cache's root, for callers)

ENV = CACHE_ENV
FORMAT = "geometry-checks-measurement-cache"
VERSION = 1
OFF = CACHE_OFF
PACKAGE = Path(__file__).resolve().parent
# The modules whose source decides a Measurement's numbers (a missing one is skipped).
# lab.py: it fits the set to the token limit and writes the provenance a cached entry keeps
# (the set's hash as given, what was truncated), so an entry of an older Lab is not served.
CODE_FILES = ("metrics.py", "measure.py", "streaming.py", "capture.py", "loader.py", "registry.py", "sentences.py",
              "openquestion.py", "cache.py", "lab.py", "intervals.py")
# Small model files that decide tokenization, architecture and pooling (besides the weights).
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "sentencepiece.bpe.model",
               "spiece.model", "modules.json", "1_Pooling/config.json", "sentence_bert_config.json")
WEIGHT_GLOBS = ("*.safetensors", "*.bin")
ISA_ENV = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR")


def cache_dir() -> Path | None:
    """The cache directory, or None when $GEOMETRY_CHECKS_CACHE turns the cache off."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in OFF:
        return None
    if value:
        return Path(value).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("geometry-checks")) / "measurements"


@lru_cache(maxsize=1)
def code_version() -> str:
    """sha256 over the source of the modules that compute a Measurement."""
    digest = hashlib.sha256()
    for name in CODE_FILES:
        path = PACKAGE / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _sha(path: Path) -> str:
    stat = path.stat()
    return _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)


def model_fields(ref) -> dict | None:
    """What identifies a model's numbers: None for a model that is not a local directory."""
    if not ref.is_dir:
        return None
    directory = Path(ref.location)
    sha = loader.weights_sha256(directory)
    if sha is None:  # sharded weights: name, size and mtime of every shard (hashing GBs is too slow)
        weights = sorted(
            (p.name, p.stat().st_size, p.stat().st_mtime_ns) for g in WEIGHT_GLOBS for p in directory.glob(g)
        )
    else:
        weights = sha
    files = {name: _sha(directory / name) for name in MODEL_FILES if (directory / name).is_file()}
    files.update({p.name: _sha(p) for p in sorted(directory.glob("*.py"))})  # custom modelling code
    spec = ref.spec
    revision = loader._revision_of(directory) or (spec.revision if sha and sha == spec.weights_sha256 else None)
    return {
        "spec": dataclasses.asdict(spec),
        "revision": revision,
        "weights": weights,
        "files": files,
    }


def key_fields(ref, *, device: str, dtype: str, sentences, batch_size: int, poolings, max_pca_tokens,
               seed: int, method: str = "auto", sublayers: bool = False) -> dict | None:
    """Every input that decides a Measurement, as JSON-ready data; None if it cannot be cached."""
    import torch
    import transformers

    model = model_fields(ref)
    if model is None:
        return None
    dev = loader.pick_device(device)
    if dev.type == "cuda":
        hardware = torch.cuda.get_device_name(dev)
    else:
        hardware = torch.backends.cpu.get_cpu_capability()
    return {
        "format": VERSION,
        "code": code_version(),
        "model": model,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "dtype": dtype,
        "device": dev.type,
        "hardware": hardware,
        "threads": torch.get_num_threads(),
        "isa_env": {k: os.environ[k] for k in ISA_ENV if k in os.environ},
        "sentence_set": sentences.sha256,
        "sentence_set_name": sentences.name,
        "batch_size": int(batch_size),
        "method": method,
        "poolings": list(poolings),
        "max_pca_tokens": max_pca_tokens,
        "seed": seed,
        "sublayers": bool(sublayers),
    }


def key_of(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _checksum(measurement: dict) -> str:
    text = json.dumps(measurement, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def entry_path(fields: dict, directory: Path | None = None) -> Path | None:
    directory = directory or cache_dir()
    return None if directory is None else directory / f"{key_of(fields)}.json"


class _Corrupt(Exception):
    pass


def _validated(path: Path, key: str) -> Measurement:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _Corrupt(f"not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _Corrupt("not a geometry-checks cache entry")
    if data.get("version") != VERSION:
        raise _Corrupt(f"entry version {data.get('version')!r}, expected {VERSION}")
    if data.get("key") != key:
        raise _Corrupt("its key does not match its file name")
    measurement = data.get("measurement")
    if not isinstance(measurement, dict):
        raise _Corrupt("no measurement")
    try:
        checksum = _checksum(measurement)
    except (TypeError, ValueError):
        raise _Corrupt("the measurement is not plain JSON") from None
    if checksum != data.get("sha256"):
        raise _Corrupt("checksum mismatch")
    try:
        result = Measurement.from_json(measurement)
    except TypeError as exc:
        raise _Corrupt(f"not a Measurement ({exc})") from None
    if result.schema != SCHEMA or not isinstance(result.curves, dict) or not result.curves:
        raise _Corrupt(f"measurement schema {result.schema!r} or curves unusable")
    return result


def load(fields: dict | None, directory: Path | None = None) -> Measurement | None:
    """The cached Measurement for these fields, or None (absent, cache off, or unusable: then
    a warning, and the entry is deleted so that the recomputed one replaces it)."""
    if fields is None:
        return None
    path = entry_path(fields, directory)
    if path is None or not path.is_file():
        return None
    try:
        return _validated(path, key_of(fields))
    except OSError as exc:
        warnings.warn(f"cache entry {path} is unreadable ({exc.strerror or exc}); recomputing it", stacklevel=2)
        return None
    except _Corrupt as exc:
        warnings.warn(f"cache entry {path} is corrupt ({exc}); deleting and recomputing it", stacklevel=2)
        try:
            path.unlink()
        except OSError:
            pass
        return None


def store(fields: dict | None, result: Measurement, directory: Path | None = None) -> Path | None:
    """Write the entry atomically; a cache that cannot be written is a warning, never an error."""
    if fields is None:
        return None
    path = entry_path(fields, directory)
    if path is None:
        return None
    measurement = result.to_json()
    try:
        checksum = _checksum(measurement)
    except (TypeError, ValueError) as exc:  # inf somewhere: not representable, so not cached
        warnings.warn(f"measurement not cached ({exc})", stacklevel=2)
        return None
    entry = {"format": FORMAT, "version": VERSION, "key": key_of(fields), "fields": fields,
             "sha256": checksum, "measurement": measurement}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem[:16]}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            # dumps, not dump: json.dump streams through the pure-Python encoder (25 ms against 14 ms)
            handle.write(json.dumps(entry, separators=(",", ":"), allow_nan=False))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
        return path
    except OSError as exc:
        warnings.warn(f"cannot write cache entry {path} ({exc.strerror or exc}); continuing without", stacklevel=2)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        return None
