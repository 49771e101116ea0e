#!/bin/bash
# Builds and runs the host emulation of the CUDA scan-family kernels against
# the CPU reference. Needs the engine's CPU objects: `make CUDA=0 BUILD=build-host`
# (only engine/ is linked). Usage: tools_dev/scan_emu/run.sh [SCAN_CU] [--quick]
#   SCAN_CU: the scan.cu to emulate (default engine/ops/scan/scan.cu; e.g. an
#   older revision extracted with `git show REV:engine/ops/scan/scan.cu`).
# Extra compiler flags: EMU_CXXFLAGS (e.g. -fsanitize=address). Output folder:
# EMU_OUT (default build-emu/). EMU_SCHEDULE=random: random thread interleaving.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/tools_dev/scan_emu"
OUT=${EMU_OUT:-$ROOT/build-emu}  # where the generated sources and the binary go
GEN="$OUT/gen"
SRC_ROOT="$ROOT"
if [[ $# -gt 0 && "$1" != --* ]]; then
  SRC_ROOT=$(mktemp -d)
  mkdir -p "$SRC_ROOT/engine/ops/scan" "$SRC_ROOT/engine/cuda"
  cp "$1" "$SRC_ROOT/engine/ops/scan/scan.cu"
  cp "$ROOT/engine/cuda/cuda_utils.cuh" "$SRC_ROOT/engine/cuda/"
  shift
fi
rm -rf "$GEN"
python3 "$HERE/gen.py" "$SRC_ROOT" "$GEN"
OBJS=$(find "$ROOT/build-host/engine" -name '*.o' | sort)
[[ -n "$OBJS" ]] || { echo "no engine objects: run make CUDA=0 BUILD=build-host first"; exit 1; }
g++ -std=c++17 -O2 -g -Wno-unknown-pragmas -fopenmp ${EMU_CXXFLAGS:-} \
  -I"$HERE/fake_cuda" -I"$GEN" -I"$ROOT" -DEMU_SCAN_CU="\"$GEN/engine/ops/scan/scan.cu\"" \
  "$HERE/scan_bwd_emu.cpp" $OBJS -o "$OUT/scan_bwd_emu" -lopenblas -lfmt -ljpeg -lz -lpthread
OMP_NUM_THREADS=1 "$OUT/scan_bwd_emu" "$@"
