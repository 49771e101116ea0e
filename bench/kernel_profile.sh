#!/usr/bin/env bash
# Where the GPU time of ./bench_vit goes, kernel by kernel: runs it under Nsight
# Compute collecting only each launch's duration (one replay per kernel), then
# sums by kernel. Needs a built tree and ncu on the PATH (or in /usr/local/cuda/bin).
#   bench/kernel_profile.sh OUT [bench_vit flags...]
# defaults: ViT-S/16, batch 256, one call per round, bf16 GEMMs. Writes OUT/ncu.csv
# and OUT/kernel_profile.txt.
set -eu -o pipefail
cd "$(dirname "$0")/.."
out=$1
shift
mkdir -p "$out"
ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
args=(${@:---models vit_small_patch16_224 --batch 256 --steps 1 --precision bf16})
"$ncu" --csv --metrics gpu__time_duration.sum ./bench_vit --device cuda "${args[@]}" --out "$out/bench_vit.json" \
  > "$out/ncu.csv"
python3 bench/kernel_profile.py "$out/ncu.csv" 45 | tee "$out/kernel_profile.txt"
