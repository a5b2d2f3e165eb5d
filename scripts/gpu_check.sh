#!/usr/bin/env bash
# The GPU node check in one lease of the device tool's H100 (issue: a real GPU node).
#
# Here, once: ../shared/gpu/prepare-vllm-carry.sh .gpu-carry   (vLLM 0.26.0 for torch 2.11, in 3 parts)
#             and the wheels the device image lacks into .whl/ (supervisor, httptools); both ignored by git.
# Then three device calls, each within 30 s of the one before (the machine stays warm 30 s):
#   call 1  carry [".gpu-carry/p0"]          bash scripts/gpu_check.sh part
#   call 2  carry [".gpu-carry/p1"]          bash scripts/gpu_check.sh part
#   call 3  carry [".gpu-carry/p2", ".whl"]  bash scripts/gpu_check.sh run
#           (on 2 GPUs: `run --tp 2 --backend mp`, or `--backend ray` with Ray carried as wheels too)
# `run` installs vLLM, its missing imports, supervisor and baremetal into the image's python3 (an env of
# kind "system"), checks the NVML path (scripts/gpu_check.py), then runs scripts/gpu_node_check.py: the
# stack up on GPU 0, requests through the gateway, a frozen engine caught and restarted, and down. It
# prints a table; JSON and logs land in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
# Multi-GPU hosts of the device tool: NVLink multicast must stay off in every program (its README).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/bmg-out}
mkdir -p "$OUT" /tmp/parts

case "${1:-}" in
part)
  mv .gpu-carry/p*/vllm.tar.xz.part* /tmp/parts/
  ls -l /tmp/parts
  ;;
run)
  started=$(date +%s)
  cp .gpu-carry/p2/vllm.tar.xz.part* /tmp/parts/ 2>/dev/null || true
  (cd /tmp/parts && cat vllm.tar.xz.part* > vllm.tar.xz && sha256sum -c "$OLDPWD/.gpu-carry/p2/SHA256SUMS")
  rm -rf /tmp/v && mkdir -p /tmp/v && xz -T0 -dc /tmp/parts/vllm.tar.xz | tar -x -C /tmp/v
  wheel=/tmp/vllm-0.26.0-cp38-abi3-manylinux_2_28_x86_64.whl
  (cd /tmp/v && python3 -m zipfile -c "$wheel" vllm vllm-0.26.0.dist-info)
  python3 -m pip install -q --no-deps --no-index "$wheel" .gpu-carry/p2/deps/*.whl .whl/*.whl
  python3 -m pip install -q --no-deps --no-index --no-build-isolation .
  echo "installed in $(( $(date +%s) - started ))s"
  python3 scripts/gpu_check.py --samples 200 > "$OUT/nvml.json" && head -c 1500 "$OUT/nvml.json"; echo
  shift
  python3 scripts/gpu_node_check.py --root /tmp/bmg --out "$OUT" --python "$(command -v python3)" "$@"
  ;;
*)
  echo "usage: scripts/gpu_check.sh part|run   (see the comment at its top)" >&2
  exit 2
  ;;
esac
