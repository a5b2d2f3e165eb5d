"""What supervisord should run, as plain data: one ProgramSpec per program, its probe, and the host facts
the plan was made from. Imports nothing of baremetal's at run time, so every layer can use it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Mapping

if TYPE_CHECKING:
    from baremetal.engines.versions import VllmBuild

ProbeKind = Literal["vllm", "fastchat-worker", "controller", "openai", "http"]
Role = Literal["ray", "controller", "worker", "program", "api", "watchdog"]


@dataclass(frozen=True)
class Probe:
    """How to tell that a program serves: one cheap real request, chosen by `kind`."""

    kind: ProbeKind
    url: str                   # base URL (or the full URL for kind "http")
    model: str | None = None   # served model name, for requests that need one
    task: str | None = None    # chat | embed | rerank


@dataclass(frozen=True)
class ProgramSpec:
    """One supervisord program, complete: render.py turns it into a file without further decisions."""

    name: str
    role: Role
    argv: tuple[str, ...]
    environment: Mapping[str, str]
    priority: int
    gpus: tuple[int, ...] | None = None
    host: str | None = None
    port: int | None = None
    probe: Probe | None = None
    directory: str | None = None
    startsecs: int = 3
    startretries: int = 2
    stopwaitsecs: int = 10
    stopsignal: str = "TERM"
    model: str | None = None   # served model name, for workers and [[program]] backends
    engine: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)   # facts worth printing (e.g. vLLM version used)
    blocked: str | None = None  # not to be started (its GPUs are cordoned, no spare free): why


@dataclass(frozen=True)
class HostFacts:
    """What plan needs to know about the host, gathered once by `gather_facts` (the I/O lives there)."""

    baremetal_python: str
    vllm_builds: Mapping[str, VllmBuild]    # env name -> build its programs will run
    minfds: int = 65536                     # open-file limit supervisord asks for (inherited by engines)
    ray_client: bool = False                # the cluster's Ray env has ray[client] (Ray then starts its client server)
    api_keys_version: str | None = None     # digest of FastChat's API key specs as written (plan.keys_file)
    cordoned: frozenset[int] = frozenset()  # GPUs in <root>/run/cordon.json: programs move off them
    conv_templates: Mapping[str, str] = field(default_factory=dict)   # FastChat worker program -> conv template
