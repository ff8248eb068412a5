#!/usr/bin/env bash
# Create a fresh virtual environment with everything zero-prior needs.
#
#   scripts/bootstrap.sh            -> ./.venv
#   ZERO_PRIOR_VENV=DIR scripts/bootstrap.sh
#
# Installs torch 2.14.1 / torchvision 0.29.1 and zero-prior with its [test]
# extra. When an ai-toolkit checkout is found ($AI_TOOLKIT_DIR, else
# ~/ai-toolkit), also installs ai-toolkit's own requirements, with the three
# adjustments it needs outside its Docker image: diffusers 0.39.0 instead of
# its git pin (a 0.39.0 pre-release), torchaudio 2.11.1 (imported but not
# listed), and no triton on a machine without a GPU (ai-toolkit's omnigen2
# module asks for a CUDA device at import time when triton is present).
# When a ComfyUI checkout is found ($COMFYUI_DIR, else ~/ComfyUI), also
# installs the few of its requirements that importing its comfy.sd and nodes
# modules needs (the ComfyUI node's tests load the node with ComfyUI's loader).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv="${ZERO_PRIOR_VENV:-$root/.venv}"
aitk="${AI_TOOLKIT_DIR:-$HOME/ai-toolkit}"
comfyui="${COMFYUI_DIR:-$HOME/ComfyUI}"

python3 -m venv --clear "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip
"${pip[@]}" install torch==2.14.1 torchvision==0.29.1

if [ -f "$aitk/run.py" ]; then
    echo "bootstrap: installing ai-toolkit's requirements from $aitk ($(git -C "$aitk" rev-parse --short HEAD 2>/dev/null || echo 'unknown commit'))"
    reqs=$(mktemp)
    trap 'rm -f "$reqs"' EXIT
    grep -hv -e '^-r' -e '^git+' -e '^#' -e '^[[:space:]]*$' "$aitk/requirements_base.txt" "$aitk/requirements.txt" > "$reqs"
    "${pip[@]}" install torchaudio==2.11.1 diffusers==0.39.0 -r "$reqs"
else
    echo "bootstrap: no ai-toolkit checkout at $aitk; ai-toolkit tests will be skipped (README: 'ai-toolkit')"
fi

if [ -f "$comfyui/comfy/sd.py" ]; then
    echo "bootstrap: installing what ComfyUI's imports need ($comfyui, $(git -C "$comfyui" rev-parse --short HEAD 2>/dev/null || echo 'unknown commit'))"
    "${pip[@]}" install torchaudio==2.11.1 torchsde einops psutil scipy "av>=14.2.0"
else
    echo "bootstrap: no ComfyUI checkout at $comfyui; ComfyUI node tests will be skipped (README: 'ComfyUI')"
fi

"${pip[@]}" install -e "$root[test]"

# Last, because any later install that resolves torch's requirements brings triton back.
if [ -f "$aitk/run.py" ] && ! "$venv/bin/python" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    "${pip[@]}" uninstall -y triton
fi
echo "bootstrap: ready: $venv"
