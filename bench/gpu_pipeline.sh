#!/usr/bin/env bash
# The pipeline on a GPU machine, for the numbers in bench/RESULTS.md: the
# CIFAR-10 evaluation, the full sparsity analysis and the distillation job,
# each timed. Expects ENGINE_SHARED_DIR (models/, data/) and a built tree;
# each step's tool writes its outputs under $1 (default runs/gpu); the steps'
# output and times go to stdout.
#   bench/gpu_pipeline.sh OUT [steps...]   steps: eval sparsity distill distill_mamba groupwise
#                                           groupwise_mamba
#                                           pretrain pretrain_resume
# pretrain starts ./pretrain configs/pretrain_cifar10.ini afresh in OUT/pretrain, stopping (with a
# checkpoint) after PRETRAIN_MINUTES (default 8.5) so that it fits one 10-minute device call;
# pretrain_resume continues it for another PRETRAIN_MINUTES (run it in later calls until
# OUT/pretrain/results.json says "finished": true). PRETRAIN_EPOCHS (default 100) sets the length.
# PRECISION=fp32|bf16 sets eval's and the distillation steps' precision (default: eval fp32, the
# distillation steps their config's).
set -u -o pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/gpu}
shift || true
steps=${*:-eval sparsity distill}
shared=${ENGINE_SHARED_DIR:-../shared}
mkdir -p "$out"
run_precision=${PRECISION:+",run.precision=$PRECISION"}

for step in $steps; do
  echo "==== $step"
  start=$SECONDS
  case $step in
    eval)
      ./eval_imagenet --model "$shared/models/vit-cifar10-tiny" --data "$shared/data/cifar10-jpeg.tar.xz" \
        --subdir cifar10/test --device cuda --batch 500 --workers 8 --precision "${PRECISION:-fp32}" --out "$out/eval_gpu.json" ;;
    sparsity)
      ./analyze_sparsity --model "$shared/models/vit-cifar10-tiny" --data "$shared/data/cifar10-jpeg.tar.xz" \
        --subdir cifar10/test --device cuda --batch 500 --workers 8 --out "$out/sparsity" --overwrite ;;
    distill)
      ./train_distill configs/cifar10_full.ini --set "teacher.model=$shared/models/vit-cifar10-tiny,data.path=$shared/data/cifar10-jpeg.tar.xz,output.dir=$out/distill$run_precision" ;;
    distill_mamba)
      ./train_distill configs/cifar10_full.ini --set "teacher.model=$shared/models/vit-cifar10-tiny,data.path=$shared/data/cifar10-jpeg.tar.xz,output.dir=$out/distill_mamba,student.mixer=mamba:d_state=16$run_precision" ;;
    pretrain|pretrain_resume)
      [ "$step" = pretrain ] && start_mode=output.overwrite=true || start_mode=output.resume=true
      ./pretrain configs/pretrain_cifar10.ini "data.path=$shared/data/cifar10-jpeg.tar.xz" run.device=cuda \
        "output.dir=$out/pretrain" "train.epochs=${PRETRAIN_EPOCHS:-100}" \
        "run.time_limit_minutes=${PRETRAIN_MINUTES:-8.5}" "$start_mode" ;;
    groupwise|groupwise_mamba)
      [ "$step" = groupwise ] && mixer=gated_rnn:width=96 || mixer=mamba:d_state=16
      ./train_distill configs/cifar10_groupwise.ini --set "teacher.model=$shared/models/vit-cifar10-tiny,data.path=$shared/data/cifar10-jpeg.tar.xz,output.dir=$out/$step,student.mixer=$mixer$run_precision" ;;
  esac
  echo "==== $step took $((SECONDS - start)) s (exit $?)"
done
