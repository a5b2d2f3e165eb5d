"""The render pipeline end to end: Stack -> plan -> render -> write, as used by `render`, `up` and `install`."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from baremetal.config.model import Stack
from baremetal.errors import UsageError
from baremetal.plan import keys_file, owner
from baremetal.plan.facts import gather_facts
from baremetal.plan.plan import plan
from baremetal.plan.spec import HostFacts, ProgramSpec

if TYPE_CHECKING:
    from baremetal.plan.write import Changes


@dataclass(frozen=True)
class Generated:
    specs: list[ProgramSpec]
    changes: Changes
    target: Path


def program_specs(stack: Stack, facts: HostFacts | None = None) -> list[ProgramSpec]:
    """The programs of `stack` as this host would run them."""
    return plan(stack, facts or gather_facts(stack))


def checked_specs(stack: Stack) -> list[ProgramSpec]:
    """The programs of `stack`, with every value proved by rendering their files in memory (`validate`):
    what supervisord would not read back as written is refused here too."""
    from baremetal.plan.render import render

    _keys, keys_version = keys_file.planned(stack)
    facts = dataclasses.replace(gather_facts(stack), api_keys_version=keys_version)
    specs = plan(stack, facts)
    render(stack, specs, facts)
    return specs


def generate(stack: Stack, out: Path | None = None) -> Generated:
    """Render the stack's supervisord files into <root>/supervisor (or `out`), and create the state folders."""
    from baremetal.plan.render import render  # Jinja2: imported here so that `status` never loads it
    from baremetal.plan.write import prepare_root, write_rendered

    target = out or stack.supervisor_dir
    if out is None:
        owner.check_root(stack)
    else:
        owner.check_out_folder(stack, out)
    keys, keys_version = keys_file.planned(stack)
    facts = dataclasses.replace(gather_facts(stack), api_keys_version=keys_version)
    specs = plan(stack, facts)
    files = render(stack, specs, facts)     # every value proved before anything is written
    try:
        if out is None:
            prepare_root(stack.root)
            owner.claim_root(stack)
            keys_file.write_keys_file(stack, keys)
        changes = write_rendered(files, target)
    except OSError as error:
        where = "the stack's root (stack.root in the stack file)" if out is None else "--out"
        raise UsageError(f"cannot write the supervisord files into {target}: {error.strerror or error}"
                         f"{f' ({error.filename})' if error.filename else ''}; choose a folder you can write to "
                         f"for {where}") from None
    return Generated(specs=specs, changes=changes, target=target)


def known_specs(stack: Stack) -> list[ProgramSpec]:
    """The programs as `status`, `start`, `stop` and `logs` need them (names, probes, ports, GPUs), fast:
    unlike `program_specs` it never runs an interpreter to ask its vLLM version (a "system" env is taken
    at its pinned or newest known version), so only the rendered argv could differ, which these ignore."""
    from baremetal.config.model import frozen_mapping
    from baremetal.engines.versions import NEWEST_KNOWN_VLLM, VllmBuild, installed_vllm, pinned_vllm

    builds = {}
    for name in sorted({m.env for m in stack.models if m.engine in ("vllm", "fastchat-vllm")}):
        env = stack.envs[name]
        builds[name] = ((installed_vllm(env) if env.kind != "system" else None) or pinned_vllm(env.packages)
                        or VllmBuild("vllm", NEWEST_KNOWN_VLLM, "newest known"))
    from baremetal.host.cordon import cordon_path, cordoned_gpus

    return plan(stack, HostFacts(baremetal_python=sys.executable, vllm_builds=frozen_mapping(builds),
                                 cordoned=cordoned_gpus(cordon_path(stack.run_dir))))
