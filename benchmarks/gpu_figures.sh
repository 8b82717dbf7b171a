#!/usr/bin/env bash
# The GPU figures of benchmarks/README.md, in one go (each part under its own time limit, so one failure loses one part):
#   1. one NEO-KD training epoch at the paper's CIFAR-10 preset (msdnet_cifar10, batch 128, PGD-7 max-average,
#      --amp auto) on random data of CIFAR-10's shape and size (45,000 training images), and its 150-epoch
#      projection;
#   2. benchmarks/bench_train_step.py on the GPU (3 models x neokd, adv; naive, fp32, bf16) with the profile of
#      the 7-exit row;
#   3. the batched cascade against the lock-step loop: the cascade was removed from the code (a848af3), so this
#      part runs benchmarks/bench_attacks.py of the commit before its removal, from a checkout in $OLD
#      (e.g. `git worktree add /tmp/old a848af3^`), when $OLD holds one.
#
# Usage, from the repository root on a machine with a GPU:
#     OUT=gpu-figures OLD=/tmp/old bash benchmarks/gpu_figures.sh
# Env: OUT (default gpu-figures), EPOCHS (epochs per timed run, default 1; with 2 or more the projection uses the
# last epoch for the 149 after the first), EPOCH_ALT (one more fp32 run with these `run` options), PYTHON
# (python3), DEVICE (cuda), QUICK=1 (a seconds-long dry run on any
# device: tiny data, one rep), WHEELS (a folder of wheels to install first, for a machine without a registry),
# AMPS (the --amp values of the NEO-KD epochs, default "auto"), STEP_ARGS (bench_train_step.py's arguments),
# ADV=0 (no adv epoch), EPOCH_EXTRA (more `run` options for the epochs, e.g. "--workers 4"), TESTS=0 (skip the
# GPU-only tests of part 0), GPU_TESTS (the test files of part 0).
set -u
OUT=${OUT:-gpu-figures}
PY=$(command -v "${PYTHON:-python3}") || { echo "no python: ${PYTHON:-python3}"; exit 1; }
case "$PY" in /*) ;; *) PY="$PWD/$PY" ;; esac
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
WORK=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

# The project, and the old one, installed into their own folders (no registry needed: --no-index).
SITE="$WORK/site"
if [ -n "${WHEELS:-}" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl || exit 1
fi
"$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$WORK/cur" . || exit 1
export PYTHONPATH="$SITE:$WORK/cur"
nvidia-smi -L 2>/dev/null | tee "$OUT/machine.txt"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/machine.txt"

if [ "$QUICK" = 1 ]; then
    N_TRAIN=600; EPOCH_ARGS="--train-limit 128 --batch-size 64 --val-size 100"
    STEP_ARGS="--models smallcnn --defenses neokd --reps 1 --min-seconds 0 --threads 2 --no-warmup"
    CASCADE_ARGS="--models smallcnn --reps 1 --min-seconds 0 --threads 2"
else
    N_TRAIN=10000; EPOCH_ARGS=""
    STEP_ARGS=${STEP_ARGS:-"--reps 3 --min-seconds 2 --profile --top 15"}
    CASCADE_ARGS="--models smallcnn,msdnet_cifar10,msdnet_cifar100 --reps 3 --min-seconds 2"
fi

if [ "${TESTS:-1}" = 1 ]; then
    echo "== 0. the tests that need a GPU (CUDA-graph replay of the attack and of the loss step; precision)"
    # shellcheck disable=SC2086
    timeout 240 "$PY" -m pytest -q -p no:cacheprovider ${GPU_TESTS:-tests/attacks/test_graphs.py tests/test_step_graph.py tests/test_precision.py} 2>&1 \
        | tail -25 | tee "$OUT/gpu_tests.txt"
fi

echo "== 1. one NEO-KD epoch, cifar10 paper preset, random data of CIFAR-10's shape"
"$PY" - "$WORK/cifar" "$N_TRAIN" <<'EOF'
import pickle, sys
from pathlib import Path
import numpy as np
root, n = Path(sys.argv[1]) / "cifar-10-batches-py", int(sys.argv[2])
root.mkdir(parents=True)
rng = np.random.default_rng(0)
for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
    d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist()}
    (root / name).write_bytes(pickle.dumps(d, protocol=2))
print("wrote", 6 * n, "random images in", root)
EOF
RUN="import sys; from neokd_bench.cli import main; sys.exit(main())"
epoch() {  # defense, time limit (s), --amp
    local defense=$1 start end
    start=$(date +%s.%N)
    # shellcheck disable=SC2086
    rm -rf "$WORK/run-$defense-$3"
    timeout "$2" "$PY" -c "$RUN" run --defense "$defense" --dataset cifar10 --preset paper --epochs "${EPOCHS:-1}" \
        --no-eval --data-root "$WORK/cifar" --device "$DEVICE" --out "$WORK/run-$defense-$3" --amp "$3" --quiet \
        $EPOCH_ARGS ${EPOCH_EXTRA:-} ${4:-}
    end=$(date +%s.%N)
    "$PY" - "$WORK/run-$defense-$3/checkpoint.pt" "$start" "$end" "$defense" "$DEVICE" <<'EOF' | tee -a "$OUT/epoch.txt"
import sys, torch
from neokd_bench.precision import resolve_amp
c = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
hs, cfg = c["history"], c["train_config"]
wall = float(sys.argv[3]) - float(sys.argv[2])
times = [h["wall_s"] for h in hs]
# 150 epochs: the first as measured (it pays the one-time costs: cuDNN's timing, recording the CUDA graphs, the
# workers' start), the other 149 at the last measured epoch's time
total = times[0] + 149 * times[-1]
print(f"{sys.argv[4]}: model {c['model_name']}, batch {cfg['batch_size']}, workers {cfg.get('num_workers', 0)}, "
      f"amp {cfg['amp']} (resolved: {resolve_amp(cfg['amp'], torch.device(sys.argv[5]))}), cuda_graph "
      f"{cfg.get('cuda_graph', '-')}, cudnn_benchmark {cfg.get('cudnn_benchmark', '-')}; epoch train times "
      f"{', '.join(f'{t:.1f}' for t in times)} s ({hs[-1]['imgs_per_s']:.0f} img/s in the last); whole command "
      f"{wall:.1f} s; 150 epochs = {total / 3600:.2f} GPU-hours (target 1)")
EOF
}
for amp in ${AMPS:-auto}; do epoch neokd 200 "$amp"; done
# the same with other `run` options (e.g. EPOCH_ALT="--no-cudnn-benchmark"), fp32
[ -n "${EPOCH_ALT:-}" ] && epoch neokd 200 none "$EPOCH_ALT"

echo "== 2. bench_train_step.py"
# shellcheck disable=SC2086
timeout 200 "$PY" benchmarks/bench_train_step.py --device "$DEVICE" $STEP_ARGS 2>&1 | tee "$OUT/train_step.txt"

echo "== 3. cascade against the lock-step loop (code of the commit before the cascade's removal)"
if [ -n "${OLD:-}" ] && [ -d "$OLD/bench" ]; then
    (cd "$OLD" && "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
        --target "$WORK/old" . && cd benchmarks && PYTHONPATH="$SITE:$WORK/old" timeout 110 "$PY" bench_attacks.py \
        --device "$DEVICE" $CASCADE_ARGS) 2>&1 | tee "$OUT/cascade.txt"
else
    echo "skipped: OLD is not a checkout (git worktree add /tmp/old a848af3^)" | tee "$OUT/cascade.txt"
fi

echo "== 4. one adv epoch, the same preset (for comparison)"
[ "${ADV:-1}" = 1 ] && epoch adv 50 auto
rm -rf "$WORK"
