"""How far does a measurement move when nothing about the model changes? The basis of
the recorded-baseline tolerances (geometry_checks/baselines.py TOLERANCES).

Measures MiniLM (or --model) on fixtures/core.json (or --sentences) once as the
reference (batch size 64, this machine's default torch thread count, CPU, float32),
then again with one thing changed at a time:

- batch size 1 instead of 64 (no padding at all vs padding to the longest text),
- 1 torch thread instead of the default (another reduction order in the matmuls),
- AVX2, and SSE4.2, instead of AVX-512 CPU kernels (ATen, MKL and oneDNN each capped at
  that instruction set, in a subprocess), when this CPU has AVX-512: what another CI
  runner's CPU does,
- CUDA instead of CPU in float32 (TF32 off), when a CUDA device is present, and
- each measurement given with --against, saved by `--save` in another environment
  (another transformers or torch release, another machine or GPU).

For every metric family (the name up to its first `[` or `@`) it prints the largest
absolute and relative deviation per source, the largest overall, and the tolerance
TOLERANCES gives that family, with `ok` when the tolerance covers it.

    python benchmarks/deviations.py                       # batch, threads, CUDA if present
    python benchmarks/deviations.py --save ref.json       # also save the reference
    # in another environment (e.g. the oldest supported transformers):
    python benchmarks/deviations.py --save old.json --only-save
    python benchmarks/deviations.py --against old.json=transformers-4.48
    # on a machine with a GPU: the CPU vs CUDA column appears by itself
    python benchmarks/deviations.py --device-b cuda
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geometry_checks import baselines as B  # noqa: E402
from geometry_checks.lab import DEFAULT_SENTENCES, Lab  # noqa: E402


def measure(model: str, sentences: str, batch_size: int = 64, threads: int | None = None,
            device: str = "cpu") -> dict:
    """recordable() of one measurement, with the given batch size, thread count and device."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lab = Lab(device=device, sentences=sentences, batch_size=batch_size)
            return B.recordable(lab.measurement(model))
    finally:
        torch.set_num_threads(before)


# Other CPUs, simulated: ATen's vectorized kernels, MKL's GEMMs and oneDNN each capped at
# an older instruction set than this machine's (GitHub's runners vary between CPUs).
ISA_ENVS = {
    "AVX2 vs AVX-512": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                        "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "SSE4.2 vs AVX-512": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                          "ONEDNN_MAX_CPU_ISA": "SSE41"},
}


def measure_in_subprocess(env: dict, model: str, sentences: str) -> dict:
    """The reference measurement in a fresh interpreter with extra environment variables."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "m.json"
        subprocess.run([sys.executable, __file__, "--model", model, "--sentences", sentences,
                        "--save", str(out), "--only-save"], env={**os.environ, **env}, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return json.loads(out.read_text())


def family(name: str) -> str:
    return re.split(r"[\[@]", name, maxsplit=1)[0]


def deviations(ref: dict, other: dict) -> dict[str, tuple[float, float, str]]:
    """family -> (max abs error, max relative error, the metric name of the max abs)."""
    out: dict[str, tuple[float, float, str]] = {}
    for name in B.metric_names(ref):
        got = B.lookup(other, name)
        if got is None:
            continue
        a, b = B.lookup(ref, name)[1], got[1]
        a, b = (a, b) if isinstance(a, list) else ([a], [b])
        fam = family(name)
        best = out.get(fam, (0.0, 0.0, ""))
        for x, y in zip(a, b):
            if x is None or y is None:
                if (x is None) != (y is None):
                    best = (math.inf, math.inf, name)
                continue
            err = abs(x - y)
            rel = err / abs(x) if x else (0.0 if err == 0 else math.inf)
            if err > best[0]:
                best = (err, max(best[1], rel), name)
            else:
                best = (best[0], max(best[1], rel), best[2])
        out[fam] = best
    return out


def covered(fam_dev: tuple[float, float, str], ref: dict, other_list: list[dict], fam: str) -> bool:
    """Does TOLERANCES cover every depth of every metric of this family in every source?"""
    for other in other_list:
        for name in B.metric_names(ref):
            if family(name) != fam or B.lookup(other, name) is None:
                continue
            c = B.compare("x", name, B.lookup(other, name)[1], B.lookup(ref, name)[1])
            if not c.passed:
                return False
    return True


# Families whose scale depends on the model (norms, distances, ratios) get a relative
# tolerance; the bounded ones (cosines, fractions in [-1, 1]) an absolute one.
RELATIVE = ("token_norm", "separability_ratio", "fixed_pca_step", "refit_pca_step", "teleological_distance")


def step_125(x: float) -> float:
    """The smallest of 1, 2, 5 x 10^k that is >= x (0 for 0)."""
    if x <= 0:
        return 0.0
    exp = math.floor(math.log10(x))
    for m in (1, 2, 5, 10):
        if m * 10 ** exp >= x * (1 - 1e-12):
            return float(f"{m * 10 ** exp:.0e}")
    raise AssertionError


def suggest(ref: dict, sources: dict[str, dict]) -> list[tuple[str, float, float]]:
    """(family, atol, rtol): the next 1-2-5 step at or above twice the largest deviation."""
    devs = [deviations(ref, other) for other in sources.values()]
    out = []
    for fam in dict.fromkeys(family(n) for n in B.metric_names(ref)):
        a = max(d.get(fam, (0.0, 0.0, ""))[0] for d in devs)
        r = max(d.get(fam, (0.0, 0.0, ""))[1] for d in devs)
        out.append((fam, 0.0, step_125(2 * r)) if fam in RELATIVE else (fam, step_125(2 * a), 0.0))
    return out


def table(ref: dict, sources: dict[str, dict]) -> str:
    devs = {label: deviations(ref, other) for label, other in sources.items()}
    fams = list(dict.fromkeys(family(n) for n in B.metric_names(ref)))
    head = ["metric family", *[f"{s} abs / rel" for s in sources], "largest abs / rel", "tolerance (atol, rtol)", "covered"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for fam in fams:
        cells, worst_a, worst_r = [], 0.0, 0.0
        for label in sources:
            a, r, _ = devs[label].get(fam, (0.0, 0.0, ""))
            worst_a, worst_r = max(worst_a, a), max(worst_r, r)
            cells.append(f"{a:.1e} / {r:.1e}")
        atol, rtol = B.tolerance_for(fam)
        ok = covered(None, ref, list(sources.values()), fam)
        lines.append(f"| {fam} | " + " | ".join(cells)
                     + f" | {worst_a:.1e} / {worst_r:.1e} | {atol:g}, {rtol:g} | {'ok' if ok else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--sentences", default=str(DEFAULT_SENTENCES))
    ap.add_argument("--save", metavar="PATH", help="save the reference measurement (recordable JSON) here")
    ap.add_argument("--only-save", action="store_true", help="measure the reference, save it, stop")
    ap.add_argument("--against", action="append", default=[], metavar="PATH[=LABEL]",
                    help="a reference saved elsewhere with --save, compared as one more source")
    ap.add_argument("--device-b", default="auto", choices=("auto", "cuda", "none"),
                    help="the CPU vs CUDA source: auto = when CUDA is available")
    args = ap.parse_args(argv)

    threads = torch.get_num_threads()
    print(f"reference: {args.model} on {Path(args.sentences).name}, batch 64, {threads} threads, cpu, float32; "
          f"torch {torch.__version__}, transformers {__import__('transformers').__version__}", file=sys.stderr)
    ref = measure(args.model, args.sentences)
    if args.save:
        Path(args.save).write_text(json.dumps(ref, allow_nan=False))
    if args.only_save:
        return 0
    sources = {
        "batch 1 vs 64": measure(args.model, args.sentences, batch_size=1),
        f"1 vs {threads} threads": measure(args.model, args.sentences, threads=1),
    }
    if torch.backends.cpu.get_cpu_capability() == "AVX512":
        for label, env in ISA_ENVS.items():
            sources[label] = measure_in_subprocess(env, args.model, args.sentences)
    if args.device_b == "cuda" or (args.device_b == "auto" and torch.cuda.is_available()):
        sources["cuda vs cpu"] = measure(args.model, args.sentences, device="cuda")
    else:
        print("no CUDA device: the CPU vs GPU column is not measured (run this script where one is)",
              file=sys.stderr)
    for item in args.against:
        path, _, label = item.partition("=")
        sources[label or Path(path).stem] = json.loads(Path(path).read_text())
    print(table(ref, sources))
    print("\nsuggested TOLERANCES (the next 1-2-5 step at or above twice the largest deviation):")
    for fam, atol, rtol in suggest(ref, sources):
        print(f"    ({fam!r}, {atol:g}, {rtol:g}),")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
