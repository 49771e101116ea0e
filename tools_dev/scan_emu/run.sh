#!/bin/bash
# Builds and runs the host emulation of the CUDA kernels of the sequence ops
# (linear and gated scans, selective scan, depthwise conv) against the CPU
# reference. Needs the engine's CPU objects: `make CUDA=0 BUILD=build-host`
# (only engine/ is linked). Usage: tools_dev/scan_emu/run.sh [--quick] [--linear | --conv | --selective]
# To emulate another revision, run that revision's own copy of this script
# from a worktree of it (`git worktree add /tmp/old REV`).
# Extra compiler flags: EMU_CXXFLAGS (e.g. -fsanitize=address). Output folder:
# EMU_OUT (default build-emu/). EMU_SCHEDULE=random: random thread interleaving.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE="$ROOT/tools_dev/scan_emu"
OUT=${EMU_OUT:-$ROOT/build-emu}  # where the generated sources and the binary go
GEN="$OUT/gen"
rm -rf "$GEN"
python3 "$HERE/gen.py" "$ROOT" "$GEN"
OBJS=$(find "$ROOT/build-host/engine" -name '*.o' | sort)
[[ -n "$OBJS" ]] || { echo "no engine objects: run make CUDA=0 BUILD=build-host first"; exit 1; }
CXX_FLAGS=(-std=c++17 -O2 -g -Wno-unknown-pragmas -fopenmp ${EMU_CXXFLAGS:-} -I"$HERE/fake_cuda" -I"$GEN" -I"$ROOT")
# Each kernel file is its own translation unit, as in the engine's build.
KERNEL_OBJS=()
for cu in $(cd "$GEN" && find engine -name '*.cu' | sort); do
  obj="$OUT/$(echo "$cu" | tr / _).o"
  g++ "${CXX_FLAGS[@]}" -x c++ -c "$GEN/$cu" -o "$obj" &
  KERNEL_OBJS+=("$obj")
done
for job in $(jobs -p); do wait "$job"; done
g++ "${CXX_FLAGS[@]}" "$HERE/scan_bwd_emu.cpp" "${KERNEL_OBJS[@]}" $OBJS -o "$OUT/scan_bwd_emu" \
  -lopenblas -lfmt -ljpeg -lz -lpthread
OMP_NUM_THREADS=1 "$OUT/scan_bwd_emu" "$@"
