#!/usr/bin/env bash
# The device checks of a GPU session, in one go (they must fit a short lease):
#   bash benchmarks/gpu_checks.sh OUT_DIR
# 1. the GPU tests (tests/code/test_gpu.py: bf16 steps of every module, channels-last joint step);
# 2. training throughput on CUDA: the default profile (fp32, bf16) and the paper profile (fp32, bf16,
#    bf16 + channels-last, bf16 + torch.compile), with FLOPs per step and the share of the GPU's peak.
# The machine needs torch, lightning, opencv and scipy; wheels for the rest of what the tests import
# (pydantic, pycocotools) may be carried in .whl/ and are installed to a temporary site folder.
set -uo pipefail
out=${1:?usage: gpu_checks.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 NO_ALBUMENTATIONS_UPDATE=1
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)" | tee -a "$out/gpu.txt"
timeout 90 python3 -m pytest -q -m gpu tests/code/test_gpu.py -p no:cacheprovider 2>&1 | tail -5 | tee "$out/gpu_tests.txt"
timeout 60 python3 benchmarks/training_throughput.py --device cuda --only default --variants fp32 bf16 --batch 64 \
  --steps 10 --out "$out/training_throughput_cuda_default.json"
timeout 210 python3 benchmarks/training_throughput.py --device cuda --only paper --batch 8 --steps 8 \
  --out "$out/training_throughput_cuda_paper.json"
