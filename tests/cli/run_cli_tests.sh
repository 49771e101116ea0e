#!/usr/bin/env bash
# CLI smoke test of the tools in the repository root (`make test-cli`; `make
# test` runs it after the GoogleTest suite). The suite tests the tools' library
# code; this runs the executables themselves, as a user does, and checks the
# README's promises: every tool prints --help; a bad flag, config key, value or
# input file gives one error line naming it (with the nearest valid name for a
# typo) and exit status 1; a failed run leaves no output file; a run's folder
# refuses an earlier run's outputs.
#
# Each case is one line:  check CLASS 'TEXT' ABSENT TOOL ARGS...
#   CLASS   ok: exit 0 and no "TOOL: error:" line; TEXT (unless '') is looked
#           for in stdout and stderr. error: exit 1 (a crash or a signal never
#           passes) and exactly one "TOOL: error:" line on stderr, holding TEXT.
#   ABSENT  a path that must not exist after the command (an output that a
#           failed run must not leave), or - for none.
# Commands run in a scratch folder (removed on exit) holding the inputs made
# below: tiny CIFAR-10 binary batches, IDX files, an ImageFolder with one
# undecodable image, cut and wrong-shape safetensors files, and configs of runs
# that take a few steps (the whole script: a few seconds). The PyTorch fixture
# ViT and two JPEGs of the ImageNet sample come from ${ENGINE_SHARED_DIR:-../shared};
# without it the cases that need them are skipped, or fail when CI is set (as
# in tests/shared_data.h). Prints each failure and a summary; exits 1 if any
# case failed.
set -u

root=$(cd "$(dirname "$0")/../.." && pwd)
shared=${ENGINE_SHARED_DIR:-$root/../shared}
[[ $shared == /* ]] || shared=$PWD/$shared  # the commands run elsewhere
fixtures=$shared/fixtures
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cd "$scratch" || exit 1
export ENGINE_CACHE_DIR=$scratch/cache OMP_WAIT_POLICY=passive OPENBLAS_THREAD_TIMEOUT=4

passed=0 failed=0 skipped=0

# check CLASS TEXT ABSENT TOOL ARGS...: runs one case, reports it if it fails.
check() {
  local class=$1 text=$2 absent=$3 tool=$4
  shift 4
  "$root/$tool" "$@" >stdout 2>stderr </dev/null
  local status=$? problem=""
  local errors
  errors=$(grep -c "^$tool: \(unexpected \)\?error: " stderr)
  if [[ $class == ok ]]; then
    ((status == 0)) || problem="exit status $status, expected 0"
    [[ -n $problem ]] || ((errors == 0)) || problem="an error line"
    [[ -n $problem || -z $text ]] || grep -qF -- "$text" stdout stderr || problem="'$text' in neither stdout nor stderr"
  else
    ((status == 1)) || problem="exit status $status, expected 1"
    [[ -n $problem ]] || ((errors == 1)) || problem="$errors error lines, expected 1"
    [[ -n $problem ]] || grep -qF -- "$text" stderr || problem="'$text' not in stderr"
  fi
  [[ -n $problem || $absent == - || ! -e $absent ]] || problem="'$absent' exists"
  if [[ -z $problem ]]; then
    passed=$((passed + 1))
    return
  fi
  failed=$((failed + 1))
  echo "FAIL: $tool $*"
  echo "      $problem; stderr:"
  head -5 stderr | sed 's/^/      | /'
}

# The cases that need $shared: runs them if it is there, else skips them (CI: fails).
have_shared() {
  [[ -e $fixtures/timm_vit_tiny.safetensors && -e $shared/data/imagenet-sample.tar ]] && return 0
  if [[ -n ${CI:-} ]]; then
    echo "FAIL: missing $fixtures or $shared/data (set ENGINE_SHARED_DIR)"
    failed=$((failed + 1))
  else
    echo "skipped: the cases that need $shared (set ENGINE_SHARED_DIR)"
    skipped=1
  fi
  return 1
}

# bytes B...: writes each number B (0..255) as one byte.
# shellcheck disable=SC2059  # the format is made of the \xNN escapes
bytes() { printf "$(printf '\\x%02x' "$@")"; }

# write_cifar_batch FILE RECORDS: CIFAR-10 binary records, labels 0..9 in turn, random pixels.
write_cifar_batch() {
  local i
  for ((i = 0; i < $2; i++)); do
    bytes $((i % 10))
    head -c 3072 /dev/urandom
  done >"$1"
}

# write_idx DIR PREFIX COUNT (< 256): DIR/PREFIX-{images-idx3,labels-idx1}-ubyte, 8x8
# images of random pixels, labels 0..9 in turn (header numbers: 4 bytes, big-endian).
write_idx() {
  local i
  { bytes 0 0 8 3 0 0 0 "$3" 0 0 0 8 0 0 0 8; head -c $(($3 * 64)) /dev/urandom; } >"$1/$2-images-idx3-ubyte"
  { bytes 0 0 8 1 0 0 0 "$3"; for ((i = 0; i < $3; i++)); do bytes $((i % 10)); done; } >"$1/$2-labels-idx1-ubyte"
}

# write_safetensors FILE NAME DTYPE SHAPE BYTES: one tensor of zero bytes
# (the header's length: 8 bytes, little-endian).
write_safetensors() {
  local header="{\"$2\":{\"dtype\":\"$3\",\"shape\":$4,\"data_offsets\":[0,$5]}}"
  local n=${#header}
  { bytes $((n & 255)) $((n >> 8 & 255)) 0 0 0 0 0 0; printf '%s' "$header"; head -c "$5" /dev/zero; } >"$1"
}

start=$SECONDS

# ---- every tool: --help, and flags and config files refused before any work
for tool in train_distill eval_imagenet analyze_sparsity vit_forward vit_init pretrain train_avit train_mlp \
            bench_kernels bench_vit; do
  check ok "usage: $tool" - $tool --help
done
check error "unknown flag --modle; did you mean --model?" - eval_imagenet --modle x
check error "unknown flag --bogus (see --help)" - train_avit --bogus
check error "flag --preset needs a value" - vit_init --out model --preset
check error "flag --batch: 'abc' is not an integer" - bench_vit --batch abc
check error "flag --repeats: 0 must be >= 1" - bench_kernels --repeats 0
check error "--only: unknown family 'gem'" - bench_kernels --only gem
check error "--mixer lstm in vit_small_patch16_224" - bench_vit --device cpu --mixer lstm --replace 2
check error "mixer spec 'gated_rnn:width=8,width=16': width is given twice" - bench_vit --device cpu \
  --mixer gated_rnn:width=8,width=16 --replace 2
check error "unknown model preset 'vit_tiny'" model vit_init --preset vit_tiny --out model
check error "expected a config file" - train_distill
check error "cannot open config file 'missing.ini'" - pretrain missing.ini
printf '[data]\npath x\n' >malformed.ini
check error "malformed.ini:2: malformed line 'path x'" - train_mlp malformed.ini
printf '[data]\ndir = idx\n[model]\nhiden = 8\n[output]\ndir = mlp_run\n' >mlp_typo.ini
check error "mlp_typo.ini:4: unknown key 'hiden' in [model]; did you mean 'hidden'?" mlp_run train_mlp mlp_typo.ini
printf '[data]\npath = cifar\n[tacher]\nmodel = m\n' >section_typo.ini
check error "missing key [teacher] model in section_typo.ini (is [tacher] at section_typo.ini:3 a typo?)" - \
  train_distill section_typo.ini

# ---- tiny inputs
mkdir -p cifar idx idx_cut empty_model
for batch in data_batch_1 data_batch_2 data_batch_3 data_batch_4 data_batch_5 test_batch; do
  write_cifar_batch cifar/$batch.bin 10
done
cp -r cifar cifar_cut && head -c 10000 cifar/test_batch.bin >cifar_cut/test_batch.bin
write_idx idx train 20 && write_idx idx t10k 10
cp idx/* idx_cut/ && head -c 100 idx/train-images-idx3-ubyte >idx_cut/train-images-idx3-ubyte
cat >mlp.ini <<'EOF'
[data]
dir = idx
[model]
hidden = 8
[train]
epochs = 1
batch_size = 10
[output]
dir = mlp_run
EOF
cat >pretrain.ini <<'EOF'
[model]
patch_size = 8
embed_dim = 16
depth = 1
num_heads = 2
[data]
path = cifar
train_subdir = train
test_subdir = test
workers = 1
[train]
epochs = 1
warmup_epochs = 0
batch_size = 10
[eval]
batch_size = 10
[run]
device = cpu
[output]
dir = pretrain_run
EOF

check error "[train] batch_size = '-4' must be >= 1" pretrain_run pretrain pretrain.ini train.batch_size=-4
check error "[run] device: device 'cuda:99' requested" pretrain_run pretrain pretrain.ini run.device=cuda:99
check error "IDX file 'idx_cut/train-images-idx3-ubyte'" mlp_run/results.json \
  train_mlp mlp.ini --set data.dir=idx_cut
check ok "test accuracy" - train_mlp mlp.ini
check error "output folder 'mlp_run' already holds a run's metrics.jsonl" - train_mlp mlp.ini
check ok "finished after 1.0 of 1 epochs" - pretrain pretrain.ini
check error "output folder 'pretrain_run' already holds a run's metrics.jsonl" - pretrain pretrain.ini

if have_shared; then
  model=$fixtures/timm_vit_tiny.safetensors
  mkdir -p images/a images/b
  tar -xOf "$shared/data/imagenet-sample.tar" imagenet-sample/val/n03825788/n03825788_nipple.JPEG >images/a/1.jpg
  tar -xOf "$shared/data/imagenet-sample.tar" imagenet-sample/val/n07716906/n07716906_spaghetti_squash.JPEG \
    >images/b/1.jpg
  printf 'not a JPEG' >images/b/bad.jpg
  head -c 100000 "$model" >cut.safetensors
  write_safetensors small_images.safetensors input F32 '[2,3,16,16]' 6144
  write_safetensors no_images.safetensors input F32 '[0,3,32,32]' 0
  cat >distill.ini <<EOF
[teacher]
model = $model
[data]
path = cifar
train_subdir = train
test_subdir = test
batch_size = 10
workers = 1
[layers]
select = sparsest:1
sparsity_images = 10
[student]
mixer = gated_rnn:width=16
[distill]
budget_images = 10
[finetune]
budget_images = 10
[eval]
latency_repeats = 1
latency_batches = 1
[run]
device = cpu
[output]
dir = distill_run
EOF
  mkdir -p avit_run/avit && cp "$root/configs/avit_cifar10.ini" avit.ini

  # ---- models and safetensors files
  check error "'missing_model'" - eval_imagenet --model missing_model --data cifar --subdir test --device cpu
  check error "checkpoint directory empty_model: found neither" - \
    eval_imagenet --model empty_model --data cifar --subdir test --device cpu
  check error "safetensors file cut.safetensors: tensor" out_cut.safetensors \
    vit_forward cut.safetensors "$fixtures/timm_vit_tiny_io.safetensors" out_cut.safetensors --device cpu
  check error "small_images.safetensors: 'input' is [2, 3, 16, 16]; the model takes [B, 3, 32, 32]" \
    out_small.safetensors vit_forward "$model" small_images.safetensors out_small.safetensors --device cpu
  check error "no_images.safetensors: 'input' is [0, 3, 32, 32]" out_none.safetensors \
    vit_forward "$model" no_images.safetensors out_none.safetensors --device cpu
  check error "device 'cuda:99' requested" out_gpu.safetensors \
    vit_forward "$model" "$fixtures/timm_vit_tiny_io.safetensors" out_gpu.safetensors --device cuda:99
  check ok "" - vit_forward "$model" "$fixtures/timm_vit_tiny_io.safetensors" out.safetensors --device cpu
  # (the output just written is a safetensors file, of logits and blocks.* but no input)
  check error "out.safetensors: no tensor named 'input'" out_2.safetensors \
    vit_forward "$model" out.safetensors out_2.safetensors --device cpu
  check error "--out 'idx' already exists and is not empty" - vit_init --preset vit_cifar_tiny_patch4_32 --out idx
  check error "flag --out: cannot create the folder of 'mlp.ini/model" - \
    vit_init --preset vit_cifar_tiny_patch4_32 --out mlp.ini/model

  # ---- data sets
  check error "cannot decode image 'images/b/bad.jpg'" results.json \
    eval_imagenet --model "$model" --data images --device cpu --out results.json
  check ok "(1 undecodable images skipped)" - \
    eval_imagenet --model "$model" --data images --device cpu --skip-bad-images --out results.json
  check error "'cifar_cut/test_batch.bin': 10000 bytes is not a whole number of 3073-byte records" results_cut.json \
    eval_imagenet --model "$model" --data cifar_cut --subdir test --device cpu --out results_cut.json
  check error "data folder 'cifar/tset' does not exist" sparsity_run \
    analyze_sparsity --model "$model" --data cifar --subdir tset --device cpu --out sparsity_run
  check error "precision bf16 needs a GPU" - \
    eval_imagenet --model "$model" --data cifar --subdir test --device cpu --precision bf16

  # ---- runs: a run's folder holds one run
  check ok "report: sparsity_run/index.html" - \
    analyze_sparsity --model "$model" --data cifar --subdir test --device cpu --out sparsity_run
  check error "output folder 'sparsity_run' already exists" - \
    analyze_sparsity --model "$model" --data cifar --subdir test --device cpu --out sparsity_run
  check error "<override>: [student] mixer: unknown token mixer 'lstm'" distill_run \
    train_distill distill.ini --set student.mixer=lstm
  check error "unknown key 'budget_imags' in [distill]; did you mean 'budget_images'?" distill_run \
    train_distill distill.ini --set distill.budget_imags=10
  # (checked once the teacher is loaded: the width against its own, the layers against its depth)
  check error "<override>: [student] mixer: gated_rnn: width must be positive, got -3" distill_run \
    train_distill distill.ini --set student.mixer=gated_rnn:width=-3
  sed 's/^select = sparsest:1$/select = sparsest:99/' distill.ini >too_many_layers.ini
  check error "too_many_layers.ini:10: [layers] select: layer spec 'sparsest:99': count must be in 1.." distill_run \
    train_distill too_many_layers.ini
  check ok "results: distill_run/results.json" - train_distill distill.ini
  check error "output folder 'distill_run' already holds a run's metrics.jsonl" - train_distill distill.ini
  check error "output folder 'avit_run' already holds a run's avit" - \
    train_avit avit.ini --set "teacher.model=$model,data.path=cifar,data.train_subdir=train,data.test_subdir=test" \
    --set output.dir=avit_run,output.overwrite=false,run.device=cpu,halting.target_depth=2
fi

summary="cli tests: $passed of $((passed + failed)) passed"
((skipped)) && summary+=", the cases that need $shared skipped"
((failed)) && summary+=", $failed FAILED"
echo "$summary ($((SECONDS - start)) s)"
((failed == 0))
