#!/usr/bin/env bash
# One call on a lent NVIDIA GPU (see ../shared/device/README.md): install MLX's CUDA build and the carried
# wheels from .device/wheels, put the workspace sources on the path, then run the named steps in order:
#   test-<pkg>    pytest -m gpu for packages/mlx-core-<pkg>
#   bench-<name>  python benchmarks/<name>.py   (arguments after a colon: bench-spec:--quick,--k=4)
#   train         train the shipped demo model and its draft into $OUT/demo and $OUT/demo_draft
# usage: bash benchmarks/gpu_run.sh test-kernels bench-kernels train
# On a fresh machine MLX compiles each kernel (its own and ours) with NVRTC on first use, ~4 s each, cached
# in /tmp/mlx/<version>/ptx (or MLX_PTX_CACHE_DIR): a cold test-kernels run needs far more than a warm
# one (41 modulate cases: 416 s cold, 11 s warm on an H100), so raise TEST_TIMEOUT for a first run.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile .device/wheels/*.whl || exit 1
PYTHONPATH=$(ls -d packages/*/src | paste -sd:)
export PYTHONPATH PYTHONUNBUFFERED=1
python3 -c "import mlx.core as mx; assert mx.cuda.is_available(), 'no CUDA'; print('mlx', mx.__version__, mx.default_device())" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
status=0
for step in "$@"; do
  echo "=============== $step ($(date +%T))"
  case $step in
    test-*) timeout "${TEST_TIMEOUT:-300}" python3 -m pytest -q -m gpu -p no:cacheprovider "packages/mlx-core-${step#test-}/tests" || status=1 ;;
    bench-*) name=${step#bench-}; args=""; [[ $name == *:* ]] && args=${name#*:} && name=${name%%:*}
             timeout 420 python3 "benchmarks/$name.py" ${args//,/ } || status=1 ;;
    train) timeout 480 python3 packages/mlx-core/scripts/train_demo_model.py --out-dir "${OUT:-/tmp/demo_out}" ${TRAIN_ARGS:-} || status=1 ;;
    *) echo "unknown step $step"; status=1 ;;
  esac
done
exit $status
