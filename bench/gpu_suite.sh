#!/usr/bin/env bash
# Build, test and benchmark stnas on a CUDA machine; every log and result lands in OUTDIR.
#   bash bench/gpu_suite.sh OUTDIR [all|test|bench|quick]
#     test:  build stnas._C with the CUDA kernels, run the torch-free CUDA unit test and pytest
#     bench: run the op benchmarks (after a build)
#     quick: build, the GPU-only tests and each benchmark's headline rows; sized for one 9-minute call
#            on an H200 (the whole suite takes about 16 minutes: build 75 s, pytest ~6 min, benchmarks ~9)
# Needs a CUDA build of torch, nvcc, ninja, pytest and triton; nothing is downloaded.
# On an H100 (2026-11-23): build 75 s, pytest about 6 min, the supernet benchmark about 6 min (4 of them
# torch.compile of the baseline compiling its 8 graphs), the op benchmarks about 3 min.
set -uo pipefail
out=${1:?usage: bash bench/gpu_suite.sh OUTDIR [all|test|bench]}
stage=${2:-all}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
log="$out/suite_$stage.log"
step() { echo "== $*" | tee -a "$log"; }

step "device"
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv; nvcc --version | tail -2;
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } 2>&1 | tee -a "$log"

build() {
  step "build (STNAS_CUDA=1)"
  t0=$(date +%s)
  if ! STNAS_CUDA=1 python3 -m pip install --no-build-isolation --no-deps -e . > "$out/build.log" 2>&1; then
    tail -60 "$out/build.log"; exit 1
  fi
  echo "built in $(( $(date +%s) - t0 )) s" | tee -a "$log"
}

# CR-NAS detection throughput (supernet Faster R-CNN + FPN against torchvision's ResNet-50-FPN at the same
# size) needs torchvision's compiled ops built for this torch; without them the suite says so and goes on.
crnas_detection() {  # crnas_detection TIMEOUT_S [bench args...]
  local limit=$1; shift
  if python3 -c "import torch, torchvision.ops as o; o.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)" > /dev/null 2>&1; then
    timeout "$limit" python3 bench/bench_crnas_detection.py --device cuda --size 800 --batch 8 "$@" \
      --out "$out/crnas_detection_cuda.json" 2>&1 | tail -8 | tee -a "$log"
  else
    echo "bench_crnas_detection skipped: torchvision's detection ops do not run with this torch" \
      "(pip install -r requirements-detection.txt)" | tee -a "$log"
  fi
}

if [ "$stage" = quick ]; then
  build || exit 1
  step "GPU-only tests (the cuda marker, and every test id naming cuda)"
  python3 -m pytest -q -p no:cacheprovider -rs -m cuda tests > "$out/pytest_cuda_marker.log" 2>&1
  tail -5 "$out/pytest_cuda_marker.log" | tee -a "$log"
  python3 -m pytest -q -p no:cacheprovider -rs -k cuda tests/test_masked_path_sum.py tests/test_sgld_step.py \
    tests/test_sgld_optimizer.py tests/test_build.py tests/test_mixed.py tests/test_batch_norm_act.py tests/test_toponas.py \
    > "$out/pytest_cuda_ids.log" 2>&1
  tail -5 "$out/pytest_cuda_ids.log" | tee -a "$log"
  step "headline benchmarks"
  timeout 150 python3 bench/bench_mixed_supernet.py --device cuda --steps 20 --out "$out/mixed_supernet_cuda.json" \
    2>&1 | tee -a "$log"
  timeout 90 python3 bench/bench_toponas.py --device cuda --parts edge,skip_pool,step --steps 20 --out "$out/toponas_cuda.json" \
    2>&1 | tail -24 | tee -a "$log"
  timeout 60 python3 bench/bench_sgld.py --device cuda --no-compile --out "$out/sgld_cuda.json" 2>&1 | tail -12 | tee -a "$log"
  timeout 60 python3 bench/bench_masked_path_sum.py --device cuda --paths 3,6 --mode fwd+bwd --no-compile \
    --out "$out/masked_path_sum_cuda.json" 2>&1 | tail -12 | tee -a "$log"
  timeout 90 python3 bench/bench_batch_norm_act.py --device cuda --variants relu6 --mode fwd+bwd \
    --out "$out/batch_norm_act_cuda.json" 2>&1 | tail -12 | tee -a "$log"
  timeout 150 python3 bench/bench_supernet.py --device cuda --data synthetic --impls stnas,spos,spos_strong --reps 2 \
    --out "$out/supernet_cuda.json" 2>&1 | grep -v '^USDT' | tail -12 | tee -a "$log"
  timeout 90 python3 bench/bench_scoring.py --device cuda --archs 10 --eval-images 1280 --reps 2 \
    --out "$out/scoring_cuda.json" 2>&1 | tail -10 | tee -a "$log"
  crnas_detection 120 --warmup 5 --reps 10
  step "done"
  exit 0
fi

if [ "$stage" = all ] || [ "$stage" = test ]; then
  build || exit 1

  step "torch-free CUDA kernel test"
  nvcc -O3 -std=c++17 -arch=sm_90 -Icsrc/include -Icsrc csrc/tests/test_cuda_kernels.cu csrc/cuda/standalone.cu \
    -o /tmp/test_cuda_kernels >> "$log" 2>&1 && /tmp/test_cuda_kernels 2>&1 | tail -25 | tee -a "$log"

  step "pytest"
  python3 -m pytest -q -p no:cacheprovider -rs tests > "$out/pytest.log" 2>&1
  tail -25 "$out/pytest.log" | tee -a "$log"
fi

if [ "$stage" = all ] || [ "$stage" = bench ]; then
  step "benchmarks"
  python3 bench/bench_sgld.py --device cuda --out "$out/sgld_cuda.json" 2>&1 | tee -a "$log"
  python3 bench/bench_sgld.py --device cuda --numel 100000000 --grad-dtype bf16 --out "$out/sgld_cuda_100m_bf16.json" 2>&1 | tee -a "$log"
  python3 bench/bench_masked_path_sum.py --device cuda --out "$out/masked_path_sum_cuda.json" 2>&1 | tee -a "$log"
  python3 bench/bench_batch_norm_act.py --device cuda --out "$out/batch_norm_act_cuda.json" 2>&1 | tee -a "$log"
  python3 bench/bench_scoring.py --device cuda --out "$out/scoring_cuda.json" 2>&1 | tee -a "$log"
  python3 bench/bench_mixed_supernet.py --device cuda --out "$out/mixed_supernet_cuda.json" 2>&1 | tee -a "$log"
  # TopoNAS: merged vs unmerged edges and steps, then DrNAS/DARTS searches with and without --simplify
  # (3 seeds, the demo data) and their derived cells' table accuracy.
  python3 bench/bench_toponas.py --device cuda --parts edge,skip_pool,step,search --seeds 0,1,2 --search-epochs 30 \
    --out "$out/toponas_cuda.json" 2>&1 | tee -a "$log"
  # End to end and data: real JPEGs need the ImageNet sample tar (--tar or ../shared/data), DALI needs
  # nvidia-dali installed; without them those rows say why, and the synthetic rows still run.
  tar=${STNAS_IMAGENET_SAMPLE_TAR:-../shared/data/imagenet-sample/imagenet-sample-1000.tar}
  kinds=synthetic; [ -f "$tar" ] && kinds=synthetic,jpeg
  echo "supernet data sources: $kinds" | tee -a "$log"
  python3 bench/bench_supernet.py --device cuda --data "$kinds" --tar "$tar" --out "$out/supernet_cuda.json" 2>&1 \
    | grep -v '^USDT' | tee -a "$log"
  if [ -f "$tar" ]; then
    python3 bench/bench_data.py --device cuda --tar "$tar" --out "$out/data_cuda.json" 2>&1 | tee -a "$log"
  fi
  crnas_detection 600
fi
step "done"
