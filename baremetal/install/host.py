"""Host facts for install planning: GPU or not, conda on PATH, the CUDA toolkit, and each env's state on disk.

These read the filesystem and NVML (through the seam in nvidia.py); plan.py gets the answers as data.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from baremetal.config.model import Env
from baremetal.install.nvidia import GpuReport, Nvml, PynvmlLibrary, read_gpus
from baremetal.install.plan import LOCK_NAME, EnvState, InstallHost

CONDA_NAMES = ("conda", "mamba", "micromamba")


def find_conda(environ: dict[str, str] | None = None) -> str | None:
    """conda (or mamba, micromamba) on PATH; $CONDA_EXE / $MAMBA_EXE first, as conda's own shell setup sets them."""
    environ = dict(os.environ) if environ is None else environ
    for variable in ("CONDA_EXE", "MAMBA_EXE"):
        candidate = environ.get(variable)
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    for name in CONDA_NAMES:
        found = shutil.which(name, path=environ.get("PATH"))
        if found:
            return found
    return None


def is_cuda_toolkit(folder: Path) -> bool:
    """A CUDA toolkit root has nvcc and the runtime headers (a bin/nvcc wrapper script alone is not one)."""
    return (folder / "bin" / "nvcc").exists() and (folder / "include" / "cuda_runtime.h").exists()


def find_cuda_home(environ: dict[str, str] | None = None) -> str | None:
    """Where the CUDA toolkit is, for builds such as flash-attn: $CUDA_HOME or $CUDA_PATH, /usr/local/cuda,
    the toolkit nvcc on PATH belongs to, else the newest /usr/local/cuda-X.Y."""
    environ = dict(os.environ) if environ is None else environ
    candidates = [environ.get("CUDA_HOME"), environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc", path=environ.get("PATH"))
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parent.parent))
    candidates += [str(path) for path in sorted(Path("/usr/local").glob("cuda-*"), reverse=True)]
    for candidate in candidates:
        if candidate and is_cuda_toolkit(Path(candidate)):
            return candidate
    return None


def base_python() -> str:
    """The interpreter baremetal runs on, or the one its venv was made from: new venvs are made from it,
    so they do not depend on baremetal's own venv (and every baremetal install on a host agrees)."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def gather_install_host(nvml: Nvml | None = None, gpus: GpuReport | None = None) -> InstallHost:
    """The facts `plan_install` needs, read from this host."""
    report = gpus or read_gpus(nvml or PynvmlLibrary())
    return InstallHost(nvidia_gpu=report.has_gpu, default_python=base_python(), conda_exe=find_conda(),
                       cuda_home=find_cuda_home())


def read_lock(env: Env) -> dict | None:
    """The env's lock file as written by the last successful build, or None (missing or unreadable)."""
    if env.path is None:
        return None
    try:
        value = json.loads((env.path / LOCK_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def env_state(env: Env) -> EnvState:
    """What is on disk for `env` now."""
    if env.kind == "system" or env.path is None:
        return EnvState(interpreter_exists=shutil.which(env.interpreter) is not None, prefix_has_files=False)
    lock = read_lock(env) or {}
    try:
        prefix_has_files = env.path.is_dir() and any(env.path.iterdir())
    except OSError:
        prefix_has_files = True          # unreadable: treat as someone else's; the build says so
    return EnvState(interpreter_exists=Path(env.interpreter).exists(), prefix_has_files=prefix_has_files,
                    lock_hash=lock.get("request_hash"), lock_create_hash=lock.get("create_hash"))
