#!/usr/bin/env bash
# Copy the wheels first: pip download --python-version 3.12 --only-binary=:all: -d .gpu-carry/wheels click jinja2 supervisor psutil httpx nvidia-ml-py
# then run this on the GPU host from the repository root, with .gpu-carry copied in (ignored by git).
# The real NVML path on a GPU host: doctor and install --dry-run.
set -u
python3 --version
python3 -m pip install -q --no-index --find-links .gpu-carry/wheels --target /tmp/bmdeps click jinja2 supervisor psutil httpx nvidia-ml-py 2>&1 | tail -2
export PYTHONPATH=/tmp/bmdeps:$PWD
mkdir -p /tmp/models/chat && echo '{}' > /tmp/models/chat/config.json
cat > /tmp/gpu.toml <<'TOML'
[stack]
name = "gpu"
root = "/tmp/bmstate"
models_dir = "/tmp/models"
[env.default]
kind = "system"
python = "python3"
[api]
kind = "none"
[watchdog]
enabled = false
[[model]]
name = "chat"
path = "chat"
gpus = [0]
[[model]]
name = "big"
path = "big"
gpus = [0, 1]
TOML
cat > /tmp/venv.toml <<'TOML'
[stack]
name = "gpuvenv"
root = "/tmp/bmstate2"
[api]
kind = "fastchat"
[[model]]
name = "chat"
path = "/tmp/models/chat"
gpus = [0]
TOML
echo "== nvidia-smi"; nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv
echo "== read_gpus(PynvmlLibrary())"
python3 -c "from baremetal.install.nvidia import read_gpus, PynvmlLibrary; print(read_gpus(PynvmlLibrary()))"
echo "== baremetal doctor"; python3 -m baremetal doctor -c /tmp/gpu.toml; echo "rc=$?"
echo "== baremetal doctor --json (cuda check)"; python3 -m baremetal doctor --json -c /tmp/gpu.toml | python3 -c "import json,sys; d=json.load(sys.stdin); [print(c) for c in d['checks'] if c['name'].startswith(('cuda','nvidia','gpus','/dev/shm'))]"
echo "== baremetal install --dry-run"; python3 -m baremetal install --dry-run -c /tmp/venv.toml; echo "rc=$?"
