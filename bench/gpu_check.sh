#!/usr/bin/env bash
# Acceptance run of the CUDA backend on a machine with a GPU: build, the CUDA
# test suite, the same suite under compute-sanitizer memcheck, and racecheck
# over the tests of the kernels that share memory in a block (block reductions,
# the scans' staged tiles, the fused attention's tiles on three small cases). Prints a summary; exits
# non-zero if any step failed. Logs go to build/gpu_check/.
#
# Usage, from anywhere: bench/gpu_check.sh
#   JOBS=16                    parallel build jobs
#   ENGINE_SHARED_DIR=...      fixtures (default ../shared), as for the tests
# A kernel fault is reported at the next synchronising call; to have it
# reported at its launch, rerun a failing test with CUDA_LAUNCH_BLOCKING=1.
set -u -o pipefail
cd "$(dirname "$0")/.."

JOBS=${JOBS:-16}
LOGS=build/gpu_check
TESTS=./build/engine_tests
CUDA_TESTS='Cuda*:*/Cuda*'  # as `make test-gpu`
# memcheck reports failed CUDA API calls too: leave out the test whose calls fail on purpose
# (work that a graph capture must refuse).
MEMCHECK_TESTS="$CUDA_TESTS:-CudaGraph.*IsRefused"
REDUCTION_TESTS='CudaScan.*:CudaAttentionStats.RepeatsBitForBit:CudaSoftplusLinear.*:CudaAttention.RowsWithoutActiveKeysGiveZeros:CudaAttention.NonContiguousInputs:CudaAttention.PackedMisalignedQkv:CudaAttentionBf16.MatchesCpu:CudaAttentionBf16.RowsWithoutActiveKeysGiveZeros:*/CudaOps.SumMeanMax/*:*/CudaOps.ArgmaxTakesTheFirstOfTiedMaxima/*:*/CudaOps.SoftmaxAndLogSoftmax/*:*/CudaOps.LayerNorm/*:*/CudaOps.CrossEntropyAndOtherLosses/*:*/CudaOps.ClipGradNorm/*:*/CudaOps.Optimizers/*'
SANITIZER=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
mkdir -p "$LOGS"

summary=()
failed=0
# step NAME COMMAND...: runs the command, its output shown and saved to $LOGS/NAME.log.
step() {
  local name=$1
  shift
  echo "==== $name: $*"
  local start=$SECONDS
  if "$@" 2>&1 | tee "$LOGS/$name.log"; then
    summary+=("PASS  $name ($((SECONDS - start)) s)")
  else
    summary+=("FAIL  $name ($((SECONDS - start)) s, see $LOGS/$name.log)")
    failed=1
  fi
}

if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
fi

step build make -j"$JOBS"
if [ "$failed" -eq 0 ]; then
  step test-gpu make test-gpu
  step memcheck "$SANITIZER" --tool memcheck --error-exitcode 1 "$TESTS" --gtest_filter="$MEMCHECK_TESTS" --gtest_brief=1
  step racecheck "$SANITIZER" --tool racecheck --error-exitcode 1 "$TESTS" --gtest_filter="$REDUCTION_TESTS" --gtest_brief=1
  # A suite that silently skipped (no GPU visible) must not pass as a success.
  if grep -q "no CUDA GPU" "$LOGS/test-gpu.log"; then
    summary+=("FAIL  gpu visible (the CUDA tests skipped: no GPU found)")
    failed=1
  fi
fi

echo
echo "==== summary"
printf '%s\n' "${summary[@]}"
[ "$failed" -eq 0 ] && echo "all steps passed" || echo "some steps FAILED"
exit "$failed"
