#!/usr/bin/env bash
# Regenerates weights/icsyncnet-small.* exactly as committed (see weights/README.md):
# 400 synthetic clips (seed 1), small config, 10 epochs + 2 drop-and-tune epochs on CPU,
# one thread so that the run is deterministic. About 10 minutes on 2 cores.
# Usage: scripts/train_bundled_weights.sh [WORK_DIR]   (default: runs/bundled)
set -euo pipefail
work="${1:-runs/bundled}"
export OMP_NUM_THREADS=1
python -m synccurate synth "$work/data" --n 400 --seconds 4 --seed 1 --workers 2
python -m synccurate train "$work/data" -o "$work/run" --config small --epochs 10 --tune-epochs 2 \
    --steps-per-epoch 120 --batch-size 64 --run-length 8 --lr 1e-3 --hard 15 --easy 15 \
    --lam 0.1 --val-fraction 0.05 --face-detector none --seed 0 --device cpu
python -m synccurate synth "$work/heldout" --n 200 --seconds 4 --seed 2 --workers 2
python -m synccurate eval --manifest "$work/heldout/manifest.parquet" \
    --weights "$work/run/icsyncnet-small.safetensors" -o "$work/eval.json"
echo "weights: $work/run/icsyncnet-small.safetensors (copy both .safetensors and .json into weights/)"
