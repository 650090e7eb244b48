"""Does everything stay on the GPU, and what does measuring cost there? (issue 4, item 6)

On a machine with CUDA, in one process (the model loaded once per device):

1. **CPU vs CUDA capture** on fixtures/core.json: the largest absolute difference of the
   hidden states per depth (content and special tokens, padding excluded), and the
   largest relative to that depth's largest |x|. Both in float32 (TF32 off, as
   loader.load sets it).
2. **On the device**: the captured states, and the output of every metric in
   `metrics.py` that takes a token cloud or pooled vectors, are CUDA tensors (the
   metrics never move a token cloud to the host).
3. **Throughput** on N generated sentences (gen_sentences, + core.json's pairs and
   retrieval): (a) the bare forward pass (length-sorted batches, all hidden states,
   nothing kept), (b) `measure_streaming` with every metric (what `geometry-checks
   measure` runs), (d) `measure_streaming(..., sublayers=True)` (what `measure
   --sublayers`, `report` and the pytest session run since issue 13), (c) `capture` +
   the in-memory reference `measure` (left out with --no-in-memory; slow, and large sets
   do not fit). Each is run --repeat times after one warm-up; medians, texts/s, each
   one's share of the forward pass's throughput (a/b, a/d: issue 13's targets are 80%
   and 65%), and the peak GPU memory of each.
4. With --scale N: one streaming measure of N sentences, with and without sublayers
   (time, peak GPU memory).
5. With --torch-profile K: torch.profiler over one streaming measure and one with
   sublayers (CPU and CUDA activities): host and device time, the K operators with the
   most device time and with the most host time, the synchronising calls
   (cudaStreamSynchronize, cudaMemcpy*, cudaDeviceSynchronize) and their count, and
   the number of kernels under 10 us. --trace DIR also writes Chrome traces there.

    python benchmarks/gpu.py                          # MiniLM, 2,000 sentences, 3 repeats
    python benchmarks/gpu.py --scale 20000
    # issue 13's device check, one command (about 3-4 minutes on an H100 with MiniLM):
    python benchmarks/gpu.py --sentences 20000 --repeat 2 --no-in-memory --torch-profile 20
    python benchmarks/gpu.py --device cpu --sentences 200 --repeat 1   # the same on the CPU

Exit status 1 when a state or metric output is not on the device, or when CPU and CUDA
states differ by more than --states-atol + --states-rtol * |x| (defaults 1e-4 each;
see docs/performance.md for the measured numbers and why that bound).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from bench import forward_pass, sentence_file  # noqa: E402
from geometry_checks import capture as C  # noqa: E402
from geometry_checks import loader
from geometry_checks import metrics as M  # noqa: E402
from geometry_checks.lab import DEFAULT_SENTENCES  # noqa: E402
from geometry_checks.measure import measure  # noqa: E402
from geometry_checks.sentences import load_sentence_set  # noqa: E402
from geometry_checks.streaming import measure_streaming  # noqa: E402


BATCH = 64  # --batch-size


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_only(loaded: C.LoadedModel, sentences) -> None:
    """(a): bench.py's floor in this process: length-sorted batches, all hidden states, nothing kept."""
    forward_pass(loaded, sentences, BATCH)


def streaming(loaded, sentences) -> None:
    measure_streaming(loaded, sentences, batch_size=BATCH)
    sync(loaded.device)


def streaming_sublayers(loaded, sentences) -> None:
    measure_streaming(loaded, sentences, batch_size=BATCH, sublayers=True)
    sync(loaded.device)


def torch_profile(loaded, sentences, top: int, trace_dir: str | None) -> dict:
    """torch.profiler over one streaming measure and one with sublayers: where the time goes."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if loaded.device.type == "cuda" else [])
    sort_device = "self_cuda_time_total" if loaded.device.type == "cuda" else "self_cpu_time_total"
    out = {}
    for name, fn in (("streaming measure", streaming), ("streaming --sublayers", streaming_sublayers)):
        start = time.perf_counter()
        with profile(activities=activities) as prof:
            fn(loaded, sentences)
        wall = time.perf_counter() - start
        events = prof.key_averages()
        host = sum(e.self_cpu_time_total for e in events) / 1e6
        device = sum(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0)) for e in events) / 1e6
        syncs = {e.key: e.count for e in events
                 if e.key in ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpyAsync", "cudaMemcpy",
                              "aten::item", "aten::_local_scalar_dense")}
        durations = []  # us, every device kernel (attached to the host op that launched it)
        for e in prof.events():
            durations += [k.duration for k in getattr(e, "kernels", ()) or ()]
        kernels, small = durations, sum(1 for d in durations if d < 10)
        print(f"\n5. torch.profiler, one {name} (profiled: {wall:.2f} s wall): host (self CPU) {host:.2f} s, "
              f"device (self CUDA) {device:.2f} s; {len(kernels)} kernels, {small} under 10 us; syncs {syncs}")
        print(events.table(sort_by=sort_device, row_limit=top))
        if loaded.device.type == "cuda":
            print(events.table(sort_by="self_cpu_time_total", row_limit=top))
        if trace_dir:
            Path(trace_dir).mkdir(parents=True, exist_ok=True)
            prof.export_chrome_trace(str(Path(trace_dir) / f"{name.replace(' ', '_').replace('-', '')}.json"))
        out[name] = {"wall": wall, "host_s": host, "device_s": device, "kernels": len(kernels),
                     "kernels_under_10us": small, "syncs": syncs}
    return out


def in_memory(loaded, sentences) -> None:
    states = C.capture(loaded, sentences, BATCH)
    measure(states, sentences)
    sync(loaded.device)


def timed(fn, loaded, sentences, repeat: int) -> dict:
    fn(loaded, sentences)  # warm-up: kernels, allocator, tokenizer caches
    walls, peaks = [], []
    for _ in range(repeat):
        if loaded.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(loaded.device)
        start = time.perf_counter()
        fn(loaded, sentences)
        walls.append(time.perf_counter() - start)
        if loaded.device.type == "cuda":
            peaks.append(torch.cuda.max_memory_allocated(loaded.device) / 2**20)
    return {"wall": statistics.median(walls), "walls": walls, "gpu_mb": max(peaks, default=0.0)}


def compare_states(cpu: C.LayerStates, dev: C.LayerStates) -> list[tuple[int, float, float]]:
    """(depth, max |cpu - dev|, max |cpu|) over real (unpadded) tokens."""
    real = cpu.attn[:, :, None]  # [N, T, 1]
    zero = torch.zeros(())
    rows = []
    for d in range(cpu.states.shape[0]):
        a = cpu.states[d]
        diff = torch.where(real, (a - dev.states[d].cpu()).abs(), zero).amax().item()
        rows.append((d, diff, torch.where(real, a.abs(), zero).amax().item()))
    return rows


def device_outputs(states: C.LayerStates) -> list[tuple[str, str]]:
    """Every metric of a token cloud or pooled vectors on these states: (name, its output's device)."""
    x, content = states.states, states.content
    pools = M.mean_pool(x, states.attn)
    half = pools.shape[1] // 2
    tokens = M.content_tokens(x, content)
    outputs = {
        "intra_sentence_cosine": M.intra_sentence_cosine(x, content),
        "cross_sentence_cosine": M.cross_sentence_cosine(x, content),
        "separability_ratio": M.separability_ratio(x, content),
        "token_norm": M.token_norm(x, content),
        "pc1_mean_cosine": M.pc1_mean_cosine(x, content),
        "delta_coherence": M.delta_coherence(x, content),
        "mean_pool": pools,
        "cls_mean_alignment": M.cls_mean_alignment(x, states.attn),
        "meanpool_drift": M.meanpool_drift(pools),
        "pair_cosine": M.pair_cosine(pools[:, :half], pools[:, half : 2 * half]),
        "write_depth": M.write_depth(pools),
        "late_write_fraction": M.late_write_fraction(pools),
        "dim_correlation": M.dim_correlation(pools),
        "pair_cosine_all": M.pair_cosine_all(pools),
        "fixed_pca_step": M.fixed_pca_step(tokens),
        "refit_pca_step": M.refit_pca_step(tokens),
        "teleological_distance": M.teleological_distance(tokens),
    }
    return [(name, out.device.type) for name, out in outputs.items()]


def main(argv: list[str] | None = None) -> int:
    global BATCH
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--model-path", default=None, help="a local directory for --model")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sentences", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--scale", type=int, default=0, metavar="N")
    ap.add_argument("--states-atol", type=float, default=1e-4)
    ap.add_argument("--states-rtol", type=float, default=1e-4)
    ap.add_argument("--no-in-memory", action="store_true", help="leave out (c), the slow in-memory path")
    ap.add_argument("--profile", type=int, default=0, metavar="K",
                    help="also profile one streaming measure (cProfile): the K functions with most own time")
    ap.add_argument("--torch-profile", type=int, default=0, metavar="K",
                    help="also run torch.profiler over one streaming measure and one with sublayers (K rows)")
    ap.add_argument("--trace", metavar="DIR", help="with --torch-profile: write Chrome traces here")
    ap.add_argument("--json", metavar="PATH", help="also write the numbers here")
    args = ap.parse_args(argv)
    BATCH = args.batch_size
    warnings.simplefilter("ignore")

    ref = loader.resolve(args.model, {args.model: args.model_path} if args.model_path else None)
    dev = loader.load(ref, args.device)
    name = torch.cuda.get_device_name(dev.device) if dev.device.type == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}, transformers {__import__('transformers').__version__}; "
          f"model {ref.spec.name} ({ref.spec.layers} layers x {ref.spec.hidden_size})")
    report: dict = {"device": name, "torch": torch.__version__, "model": ref.spec.name}
    failures = []

    core = load_sentence_set(DEFAULT_SENTENCES)
    dev_states = C.capture(dev, core, BATCH)
    if dev.device.type != "cpu":
        cpu = loader.load(ref, "cpu")
        rows = compare_states(C.capture(cpu, core, BATCH), dev_states)
        print(f"\n1. CPU vs {dev.device.type} capture on {core.name} (float32, TF32 off): per depth, "
              "max |difference| and that / max |x|")
        for d, diff, big in rows:
            print(f"   depth {d:2d}: {diff:.3g}  ({diff / big:.3g} of max |x| {big:.3g})")
            if diff > args.states_atol + args.states_rtol * big:
                failures.append(f"depth {d}: states differ by {diff:.3g} > {args.states_atol:g} + "
                                f"{args.states_rtol:g} * {big:.3g}")
        worst = max(rows, key=lambda r: r[1])
        print(f"   largest: {worst[1]:.3g} at depth {worst[0]}")
        report["states"] = [{"depth": d, "max_abs": a, "max_x": b} for d, a, b in rows]
        del cpu

    print(f"\n2. on the device: states on {dev_states.states.device}")
    if dev_states.states.device.type != dev.device.type:
        failures.append(f"states on {dev_states.states.device}")
    outs = device_outputs(dev_states)
    off = [n for n, d in outs if d != dev.device.type]
    print(f"   {len(outs) - len(off)} of {len(outs)} metric outputs on {dev.device.type}"
          + (f"; not: {', '.join(off)}" if off else ""))
    failures += [f"{n} returned a tensor on another device" for n in off]
    del dev_states

    with tempfile.TemporaryDirectory() as tmp:
        gen = load_sentence_set(sentence_file(args.sentences, Path(tmp)))
        n_texts = len(C.texts_of(gen))
        print(f"\n3. throughput: {args.sentences} generated sentences ({n_texts} texts), batch {BATCH}, "
              f"{args.repeat} timed runs each after a warm-up (model loaded once)")
        steps = {"a forward": forward_only, "b streaming measure": streaming, "d streaming --sublayers":
                 streaming_sublayers, "c capture + measure": in_memory}
        if args.no_in_memory:
            del steps["c capture + measure"]
        res = {k: timed(fn, dev, gen, args.repeat) for k, fn in steps.items()}
        a = res["a forward"]["wall"]
        print(f"   {'step':24} {'median s':>9} {'texts/s':>9} {'of a':>6} {'peak GPU MB':>12}  runs (s)")
        for k, r in res.items():
            print(f"   {k:24} {r['wall']:9.3f} {n_texts / r['wall']:9.0f} {a / r['wall']:6.1%} {r['gpu_mb']:12.0f}  "
                  + " ".join(f"{w:.3f}" for w in r["walls"]))
        print("   " + ", ".join(f"{k[0]}/a = {r['wall'] / a:.3f}" for k, r in res.items() if k != "a forward")
              + "  (issue 13: a/b >= 80%, a/d >= 65% of the forward pass's throughput)")
        if args.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.runcall(streaming, dev, gen)
            print(f"\n   profile of one streaming measure ({args.profile} functions with most own time):")
            pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(args.profile)
        report["throughput"] = {k: {**r, "texts_per_s": n_texts / r["wall"]} for k, r in res.items()}
        if args.scale:
            big = load_sentence_set(sentence_file(args.scale, Path(tmp)))
            n_big = len(C.texts_of(big))
            report["scale"] = {}
            for name, fn in (("streaming", streaming), ("streaming --sublayers", streaming_sublayers)):
                if dev.device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(dev.device)
                start = time.perf_counter()
                fn(dev, big)
                wall = time.perf_counter() - start
                peak = torch.cuda.max_memory_allocated(dev.device) / 2**20 if dev.device.type == "cuda" else 0.0
                print(f"\n4. scale, {name}: {args.scale} sentences ({n_big} texts): {wall:.1f} s, "
                      f"{n_big / wall:.0f} texts/s, peak GPU memory {peak:.0f} MB")
                report["scale"][name] = {"sentences": args.scale, "wall": wall, "gpu_mb": peak}
        if args.torch_profile:  # on at most 2,000 sentences: the profiler's own overhead grows with the run
            few = gen if len(gen.sentences) <= 2000 else dataclasses.replace(gen, sentences=gen.sentences[:2000])
            report["torch_profile"] = torch_profile(dev, few, args.torch_profile, args.trace)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    for f in failures:
        print(f"FAIL: {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
