"""CUDA checks (marker `gpu`; skipped where torch sees no CUDA device, which includes CI).

- The hidden states captured on CUDA equal those captured on the CPU, per depth, within
  1e-4 + 1e-4 * max|x| (float32 on both, TF32 off). Rounding differs between cuBLAS and
  the CPU kernels at every matmul and grows through the blocks; the measured differences
  are quoted in docs/performance.md and are far below this bound, which is there to catch
  a wrong kernel, a TF32 path or a dtype change, not rounding.
- The states and every metric's output stay on the device.
- A whole measurement on CUDA (the streaming path `geometry-checks measure` runs) matches
  the recorded MiniLM baseline, which was recorded on the CPU, within the recorded
  baselines' own tolerances (baselines.TOLERANCES): a GPU is no excuse for a wider gate.

benchmarks/gpu.py runs the same checks and times the forward pass against measuring.
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

from geometry_checks import baselines as B
from geometry_checks import capture as C
from geometry_checks import loader
from geometry_checks.lab import DEFAULT_SENTENCES
from geometry_checks.sentences import load_sentence_set
from geometry_checks.streaming import measure_streaming

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu import compare_states, device_outputs  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.minilm,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]


@pytest.fixture(scope="module")
def core():
    return load_sentence_set(DEFAULT_SENTENCES)


@pytest.fixture(scope="module")
def on_cuda():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return loader.load(loader.resolve("minilm"), "cuda")


@pytest.fixture(scope="module")
def cuda_states(on_cuda, core):
    return C.capture(on_cuda, core)


def test_capture_on_cuda_equals_capture_on_cpu(cuda_states, core):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cpu = C.capture(loader.load(loader.resolve("minilm"), "cpu"), core)
    rows = compare_states(cpu, cuda_states)
    bad = [f"depth {d}: {diff:.3g} (max |x| {big:.3g})" for d, diff, big in rows if diff > 1e-4 + 1e-4 * big]
    assert not bad, "CUDA and CPU states differ: " + "; ".join(bad)


def test_states_and_metrics_stay_on_cuda(cuda_states):
    assert cuda_states.states.device.type == "cuda"
    off = [name for name, device in device_outputs(cuda_states) if device != "cuda"]
    assert not off, f"metric outputs moved off the GPU: {off}"


def test_cuda_measurement_matches_the_cpu_recorded_baseline(on_cuda, core):
    recorded = B.load_recorded("minilm", core.name)
    assert recorded is not None, "no recorded MiniLM baseline"
    measured = B.recordable(measure_streaming(on_cuda, core))
    failed = [c.message for c in (B.compare_recorded("minilm", m, measured, recorded)
                                  for m in B.metric_names(recorded)) if not c.passed]
    assert not failed, "\n".join(failed)
