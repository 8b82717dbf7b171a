#!/usr/bin/env bash
# A/B of the smoke training between two checkouts, alternating (the "smoke run" figure of benchmarks/README.md):
#     git worktree add /tmp/base 232d289 && (cd /tmp/base && make setup)
#     bash benchmarks/ab_smoke.sh /tmp/base . 1 3        # BASE NEW THREADS PAIRS
# Each run: `neokd-bench run --defense neokd --dataset fashion-mnist --preset smoke --no-eval --device cpu` in
# that checkout (its own .venv); images/s = images / training seconds over the epochs, from the checkpoint's
# history. Prints one line per run, then the median ratio.
set -euo pipefail
BASE=$(cd "$1" && pwd); NEW=$(cd "$2" && pwd); T=${3:-1}; N=${4:-3}
OUT=$(mktemp -d)
declare -a base new
rate() {
    "$NEW/.venv/bin/python" -c "
import sys, torch
hs = torch.load(sys.argv[1], weights_only=True)['history']
print(round(sum(h['imgs_per_s'] * h['wall_s'] for h in hs) / sum(h['wall_s'] for h in hs), 1))" "$1"
}
for i in $(seq 1 "$N"); do
    for side in base new; do
        dir=$BASE; [ "$side" = new ] && dir=$NEW
        rm -rf "$OUT/$side"
        (cd "$dir" && OMP_NUM_THREADS=$T HF_HUB_OFFLINE=1 .venv/bin/neokd-bench run --defense neokd \
            --dataset fashion-mnist --preset smoke --no-eval --device cpu --quiet --out "$OUT/$side" >/dev/null)
        r=$(rate "$OUT/$side/checkpoint.pt")
        echo "threads $T pair $i $side $r img/s"
        if [ "$side" = base ]; then base+=("$r"); else new+=("$r"); fi
    done
done
"$NEW/.venv/bin/python" -c "
import statistics, sys
b, n = [float(v) for v in sys.argv[1].split()], [float(v) for v in sys.argv[2].split()]
print(f'median base {statistics.median(b)}, new {statistics.median(n)}: {statistics.median(n) / statistics.median(b):.2f}x')
" "${base[*]}" "${new[*]}"
rm -rf "$OUT"
