"""Where programs pinned to a cordoned GPU go: onto the stack's spare GPUs, or nowhere (blocked, with the
reason). Pure: the cordoned GPUs come in as facts (host/cordon.py reads them).

Programs that pinned the same GPUs move together onto the same spares, so models that shared a GPU
(their gpu_memory_utilization summed to at most 1.0) share its replacement. A spare is free when it is
not cordoned and no program of the stack keeps it pinned. Programs not pinned (`gpus` absent) or on CPU
are never moved.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Placement:
    """The GPUs one program runs on now."""

    gpus: tuple[int, ...] | None
    moved: tuple[tuple[int, int], ...] = ()     # (cordoned GPU, the spare that replaces it)
    blocked: str | None = None                  # not startable: why (its GPUs are kept as they were)

    def note(self) -> str | None:
        """A line for the rendered file's comment."""
        if self.blocked:
            return f"not started: {self.blocked}"
        if self.moved:
            return "moved off cordoned GPU(s) onto spare(s): " + ", ".join(f"{a} -> {b}" for a, b in self.moved)
        return None


def place(pinned: list[tuple[str, tuple[int, ...] | None]], spares: tuple[int, ...],
          cordoned: frozenset[int]) -> dict[str, Placement]:
    """A Placement for every (program, gpus) in `pinned` (in plan order)."""
    hit = [gpus for _name, gpus in pinned if gpus and cordoned.intersection(gpus)]
    taken = {gpu for _name, gpus in pinned if gpus and not cordoned.intersection(gpus) for gpu in gpus}
    free = [gpu for gpu in spares if gpu not in cordoned and gpu not in taken]
    by_group: dict[tuple[int, ...], Placement] = {}
    for gpus in dict.fromkeys(hit):
        bad = [gpu for gpu in gpus if gpu in cordoned]
        if len(free) >= len(bad):
            mapping = dict(zip(bad, free, strict=False))
            free = free[len(bad):]
            by_group[gpus] = Placement(tuple(mapping.get(gpu, gpu) for gpu in gpus), tuple(mapping.items()))
        else:
            by_group[gpus] = Placement(gpus, blocked=_blocked_reason(bad, spares, cordoned, taken, free))
    return {name: by_group.get(gpus, Placement(gpus)) if gpus else Placement(gpus) for name, gpus in pinned}


def _blocked_reason(bad: list[int], spares: tuple[int, ...], cordoned: frozenset[int], taken: set[int],
                    free: list[int]) -> str:
    which = ", ".join(map(str, bad))
    head = f"GPU{'s' if len(bad) > 1 else ''} {which} {'are' if len(bad) > 1 else 'is'} cordoned"
    if not spares:
        spare_text = "no [stack] spare_gpus to move it to"
    else:
        states = [f"{gpu} cordoned" if gpu in cordoned else f"{gpu} in use" if gpu in taken else f"{gpu} taken by "
                  "another moved program" if gpu not in free else f"{gpu} free" for gpu in spares]
        spare_text = f"{len(bad)} spare GPU(s) needed, {len(free)} free (spare_gpus: {', '.join(states)})"
    return f"{head} and {spare_text}; `baremetal uncordon {bad[0]}` once it is fixed, then `baremetal up`"
