#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one run: the CUDA tests, numba vs torch,
# and a reduced paper-scale fit on the torch backend (goal on the full scale:
# <= 8 min on one GPU). Run from the repository root on a machine with a GPU:
#   bash benchmarks/gpu_check.sh [ROWS]        (default 200000 rows)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || { make .venv/.installed >/dev/null && PY=.venv/bin/python; }
ROWS=${1:-200000}
"$PY" - <<'PYEOF'
import torch
assert torch.cuda.is_available(), "no CUDA device: this script needs a GPU"
print("CUDA device:", torch.cuda.get_device_name(0))
PYEOF
"$PY" -m pytest -q -p no:cacheprovider tests -k cuda
"$PY" benchmarks/bench_torch.py
"$PY" benchmarks/bench_paper_scale.py --rows "$ROWS" --backend torch --device cuda \
    --budget 8 --no-sae --plot gpu_time_to_quality.png
