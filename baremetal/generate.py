"""The render pipeline end to end: Stack -> plan -> render -> write, as used by `render`, `up` and `install`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from baremetal.config.model import Stack
from baremetal.plan import HostFacts, ProgramSpec, gather_facts, plan
from baremetal.render import render
from baremetal.writer import Changes, prepare_root, write_rendered


@dataclass(frozen=True)
class Generated:
    specs: list[ProgramSpec]
    changes: Changes
    target: Path


def program_specs(stack: Stack, facts: HostFacts | None = None) -> list[ProgramSpec]:
    """The programs of `stack` as this host would run them."""
    return plan(stack, facts or gather_facts(stack))


def generate(stack: Stack, out: Path | None = None) -> Generated:
    """Render the stack's supervisord files into <root>/supervisor (or `out`), and create the state folders."""
    facts = gather_facts(stack)
    specs = plan(stack, facts)
    files = render(stack, specs, facts)
    if out is None:
        prepare_root(stack.root)
        target = stack.supervisor_dir
    else:
        target = out
    return Generated(specs=specs, changes=write_rendered(files, target), target=target)
