#!/usr/bin/env bash
# A-ViT on a GPU machine, for bench/RESULTS.md: two fine-tunes of the shared
# CIFAR-10 ViT at different retention levels (avit_a, avit_b), then the
# teacher-sparsity sweep (dense + both A-ViTs as teachers), each timed.
# Expects ENGINE_SHARED_DIR (models/, data/) and a built tree; writes into $1
# (default runs/avit_gpu): avit_a/, avit_b/, sweep/, and a log per step.
#   bench/avit_pipeline.sh OUT [steps...]   steps: avit_a avit_b sweep sweep_mamba
set -u -o pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/avit_gpu}
shift || true
steps=${*:-avit_a avit_b sweep}
shared=${ENGINE_SHARED_DIR:-../shared}
teacher=$shared/models/vit-cifar10-tiny
data=$shared/data/cifar10-jpeg.tar.xz
common="teacher.model=$teacher,data.path=$data,run.device=cuda"
mkdir -p "$out"

for step in $steps; do
  echo "==== $step"
  start=$SECONDS
  case $step in
    avit_a)  # the milder level
      ./train_avit configs/avit_cifar10_gpu.ini --set "$common,output.dir=$out/avit_a,halting.target_depth=8" ;;
    avit_b)  # the sparser level: a shallower target and a stronger ponder weight
      ./train_avit configs/avit_cifar10_gpu.ini \
        --set "$common,output.dir=$out/avit_b,halting.target_depth=5,halting.alpha_p=0.003" ;;
    sweep|sweep_mamba)  # gated_rnn students (the config's), or mamba students
      [ "$step" = sweep ] && mixer=gated_rnn:width=96 || mixer=mamba:d_state=16
      ./train_distill configs/sweep_cifar10_gpu.ini --set "data.path=$data,run.device=cuda,output.dir=$out/$step,student.mixer=$mixer,experiment.teachers=dense:$teacher;avit_a:$out/avit_a/avit;avit_b:$out/avit_b/avit" ;;
    *) echo "unknown step '$step' (avit_a avit_b sweep sweep_mamba)"; exit 2 ;;
  esac 2>&1 | tee "$out/$step.log"
  status=${PIPESTATUS[0]}
  echo "==== $step took $((SECONDS - start)) s (exit $status)"
done
