#!/usr/bin/env bash
# The whole stack on a GPU host with no internet: vLLM installed from carried files, the demo's tiny-chat
# made there, served on GPU 0 with the gateway and the watchdog, an engine frozen mid-request and
# restarted, then `down`; a table at the end.
#
# What the host needs: one or more NVIDIA GPUs with their driver; python3 with pip, a CUDA torch (2.11 for
# vLLM 0.26.0) and nvidia-ml-py; no internet. Everything else comes as files in this checkout, ignored
# by git, in parts of at most 60 MB each (for copy tools and upload limits that small):
#   .gpu-carry/p0, p1, p2  vLLM 0.26.0 as vllm.tar.xz.part* (split -b 60M), p2/SHA256SUMS, and p2/deps/*.whl:
#                          the pure-Python imports vLLM needs that the host lacks
#   .whl/                  the wheels baremetal needs that the host lacks (supervisor, httptools, py-spy, ...)
# Made on a machine with internet with `pip download` of the same versions for the host's Python.
# When the parts arrive one copy at a time, run `part` after each copy (it moves that part to
# /tmp/parts), then `run` with the last part and .whl/ in place:
#   bash scripts/gpu_check.sh part
#   bash scripts/gpu_check.sh run [--tp 2 [--backend mp|ray]]   (several GPUs: tensor-parallel chat;
#                                                                 Ray's backend needs Ray carried as wheels)
#   bash scripts/gpu_check.sh faults [--clients 8]   (instead of run: scripts/bench_faults.py --gpu, two
#                                                     replicas of tiny-chat on GPU 0, faults off and on)
# `run` installs vLLM, its missing imports, supervisor and baremetal into the image's python3 (an env of
# kind "system"), checks the NVML path (scripts/gpu_check.py), then runs scripts/gpu_node_check.py: the
# stack up on GPU 0, requests through the gateway, a frozen engine caught and restarted, and down. It
# prints a table; JSON and logs land in $OUT.
# `bench` installs the same way, then runs scripts/bench_gateway.py --gpu: tiny-chat in bf16 on GPU 0,
# directly, through the gateway and through the gateway with 4 processes on one port, concurrency 1 to
# 256, whole and streamed, 5 rounds, and the per-chunk cost of a 256-token stream (about 7 minutes):
#   bash scripts/gpu_check.sh bench [--rounds 5] [--levels 1,16,64,128,256] [--workers 4]
set -euo pipefail
cd "$(dirname "$0")/.."
# Hosts whose GPUs cannot use NVLink multicast (virtualised or partitioned GPUs): keep it off in every program.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/bmg-out}
mkdir -p "$OUT" /tmp/parts

install() {
  started=$(date +%s)
  cp .gpu-carry/p2/vllm.tar.xz.part* /tmp/parts/ 2>/dev/null || true
  (cd /tmp/parts && cat vllm.tar.xz.part* > vllm.tar.xz && sha256sum -c "$OLDPWD/.gpu-carry/p2/SHA256SUMS")
  rm -rf /tmp/v && mkdir -p /tmp/v && xz -T0 -dc /tmp/parts/vllm.tar.xz | tar -x -C /tmp/v
  wheel=/tmp/vllm-0.26.0-cp38-abi3-manylinux_2_28_x86_64.whl
  (cd /tmp/v && python3 -m zipfile -c "$wheel" vllm vllm-0.26.0.dist-info)
  python3 -m pip install -q --no-deps --no-index "$wheel" .gpu-carry/p2/deps/*.whl .whl/*.whl
  python3 -m pip install -q --no-deps --no-index --no-build-isolation .
  echo "installed in $(( $(date +%s) - started ))s"
}

# A stack an earlier run on this host left up (a run cut short by a time limit before its `down`) holds
# GPU memory the next vLLM start needs: bring it down first.
leftovers() {
  for stack in /tmp/bmf/faults.toml /tmp/bmg/gpu.toml /tmp/bm-bench-*/bench.toml; do
    if [ -f "$stack" ]; then
      python3 -m baremetal down -c "$stack" >/dev/null 2>&1 && echo "brought down a stack left up: $stack" || true
    fi
  done
}

case "${1:-}" in
part)
  mv .gpu-carry/p*/vllm.tar.xz.part* /tmp/parts/
  ls -l /tmp/parts
  ;;
run)
  install
  leftovers
  shift
  python3 scripts/gpu_check.py --samples 200 > "$OUT/nvml.json" && head -c 1500 "$OUT/nvml.json"; echo
  python3 scripts/gpu_node_check.py --root /tmp/bmg --out "$OUT" --python "$(command -v python3)" "$@"
  ;;
bench)
  install
  leftovers
  shift
  python3 scripts/bench_gateway.py --gpu --python "$(command -v python3)" --out "$OUT" "$@"
  ;;
faults)
  install
  leftovers
  shift
  # Two replicas of tiny-chat on GPU 0, faults and changes with drain/hold/migration off and on.
  python3 scripts/bench_faults.py --gpu --python "$(command -v python3)" --root /tmp/bmf --out "$OUT" "$@"
  ;;
*)
  echo "usage: scripts/gpu_check.sh part|run|faults|bench   (see the comment at its top)" >&2
  exit 2
  ;;
esac
