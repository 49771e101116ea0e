#!/usr/bin/env bash
# Builds the emulation harness against the tree's build/ objects (everything
# but the real attention.cu.o and attention_mma.cu.o): build.sh [PLANT] ->
# gen/harness[_PLANT]. Needs `make build/engine_tests` (or the library
# objects) to be current. `build.sh --kernels [PLANT]` builds only
# gen/kernel_check[_PLANT] (attention_mma.cu's kernels on raw buffers; needs
# no build/ objects). EMU_BUILD=DIR links DIR's objects instead of build/'s
# (e.g. build-cpu from `make CUDA=0 BUILD=build-cpu`: no .cu objects, so its
# runtime_stub.o stands in for the CUDA runtime).
set -eu -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
kernels_only=0
if [ "${1:-}" = "--kernels" ]; then kernels_only=1; shift; fi
plant=${1:-}
cd "$root"
mkdir -p "$here/gen"
suffix=${plant:+_$plant}
FLAGS="-O2 -g -std=c++17 -fopenmp -fno-strict-aliasing -pthread"
INC="-I$here/shim -I$here -I."
if [ "$kernels_only" = 1 ]; then
  gen="$here/gen/attention_mma_emu$suffix.cpp"
  python3 "$here/gen.py" engine/ops/attention/attention_mma.cu "$gen" ${plant:+--plant "$plant"}
  [ "$here/gen/emu_runtime.o" -nt "$here/emu_runtime.cpp" ] || g++ $FLAGS $INC -c "$here/emu_runtime.cpp" -o "$here/gen/emu_runtime.o"
  g++ $FLAGS $INC -DKERNEL_TU="\"$gen\"" "$here/kernel_check.cpp" "$here/gen/emu_runtime.o" -o "$here/gen/kernel_check$suffix" -lfmt
  echo "built $here/gen/kernel_check$suffix"
  exit 0
fi
missing=0
gen_objs=""
for unit in attention attention_mma; do
  gen="$here/gen/${unit}_emu$suffix.cpp"
  note=$(python3 "$here/gen.py" engine/ops/attention/$unit.cu "$gen" ${plant:+--plant "$plant"})
  [ -z "$note" ] || { echo "$note"; missing=$((missing + 1)); }
  g++ $FLAGS $INC -c "$gen" -o "$here/gen/${unit}_emu$suffix.o" &
  gen_objs="$gen_objs $here/gen/${unit}_emu$suffix.o"
done
[ "$missing" -lt 2 ] || { echo "plant $plant: pattern in neither file"; exit 1; }
[ "$here/gen/emu_runtime.o" -nt "$here/emu_runtime.cpp" ] || g++ $FLAGS $INC -c "$here/emu_runtime.cpp" -o "$here/gen/emu_runtime.o"
[ "$here/gen/harness.o" -nt "$here/harness.cpp" ] || g++ $FLAGS -I"$here" -I. -c "$here/harness.cpp" -o "$here/gen/harness.o"
wait
build=${EMU_BUILD:-build}
stub="! -name runtime_stub.o"
ls "$build"/engine/ops/*/*.cu.o >/dev/null 2>&1 || stub=""  # a CPU-only build: its runtime stub
objs=$(find $build/engine $build/layers $build/models $build/data $build/train -name '*.o' ! -name 'attention.cu.o' \
  ! -name 'attention_mma.cu.o' $stub | sort)
g++ -o "$here/gen/harness$suffix" "$here/gen/harness.o" "$here/gen/emu_runtime.o" $gen_objs $objs \
  -lopenblas -lfmt -ljpeg -lz -lpthread -fopenmp -L/usr/local/cuda/lib64 -Wl,-rpath,/usr/local/cuda/lib64 -lcudart -lcublas -lcublasLt
echo "built $here/gen/harness$suffix"
