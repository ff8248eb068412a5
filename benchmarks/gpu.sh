#!/usr/bin/env bash
# GPU benchmarks on the full-size, random-init Qwen-Image architecture, two steps:
#   1. benchmarks/gpu_step.py: baseline vs zero-prior step time and peak memory
#      (bf16), 512 and 1024 px, side by side -> gpu_step.json;
#   2. benchmarks/gpu_24gb.py: config_examples/zero_prior_24gb.yaml's build (uint3
#      transformer + adapter, qfloat8 text encoder) capped at 24 GiB, 4 steps with
#      the token, the pivot, 4 steps on cached embeddings -> gpu_24gb.json, with a
#      PASS/FAIL verdict (exit 1 on FAIL, after writing the JSON).
# Device time, estimated (H200): ~15 s install; gpu_step.py 3-5 min (27B params
# built straight on the device in bf16 take seconds; 4 arms x 2 resolutions x 8
# steps of <= 2 s); gpu_24gb.py about 1.5 min (random init on the device in bf16
# and quantization: under 1 min; 8 steps at 1024 px, ~2-3 s each with the
# per-forward dequantization). Total about 7 min at most.
#
# 1. Here (with PyPI):   benchmarks/gpu.sh --prepare
#    puts the diffusers and optimum-quanto wheels (both pure Python, py3-none-any)
#    into .whl/ and the real Qwen2.5-VL tokenizer into .gpu_tokenizer/ (both
#    git-ignored, a few MB).
# 2. On the GPU machine (torch, transformers, peft there; no network), from the
#    repository root, carrying .whl and .gpu_tokenizer:
#       OUT=/some/dir benchmarks/gpu.sh
#    The package itself is used from extensions/ via PYTHONPATH: nothing else to install.
#    optimum-quanto's qfloat8 path is plain PyTorch (no CUDA extension is compiled).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [ "${1:-}" = "--prepare" ]; then
    rm -rf .whl .gpu_tokenizer
    python3 -m pip download -q --no-deps --only-binary=:all: -d .whl "diffusers==0.39.0" "optimum-quanto==0.2.4"
    python3 -c "import shutil, sys; from zero_prior.testbed import qwen_tokenizer_dir; shutil.copytree(qwen_tokenizer_dir(), '.gpu_tokenizer')"
    echo "prepared .whl/ and .gpu_tokenizer/; carry both to the GPU machine"
    exit 0
fi

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$root/extensions" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 benchmarks/gpu_step.py --tokenizer .gpu_tokenizer --size full --resolutions 512 1024 \
    --steps 8 --warmup 3 --out "${OUT:-.}/gpu_step.json"
python3 benchmarks/gpu_24gb.py --tokenizer .gpu_tokenizer --size full --resolution 1024 --steps 4 \
    --out "${OUT:-.}/gpu_24gb.json"
