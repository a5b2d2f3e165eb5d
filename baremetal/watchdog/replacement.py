"""Bad GPUs worked around: cordon them, move the programs pinned to them onto [stack] spare_gpus, reset a
GPU only where the operator allowed it.

- `cordon_faults` puts the GPUs with a hardware fault into <root>/run/cordon.json (host/cordon.py).
- `Placements` tells the loop where each program runs now (the plan's pure placement over the stack's
  pinned GPUs and the current cordon file, re-read when the file changes), so it watches the right GPUs.
- `Mover.move` re-renders the stack file as the plan now places it (the new CUDA_VISIBLE_DEVICES, or the
  program rendered not to start, with the reason) and has supervisord load that one program's new file:
  it starts on the spares, or stays stopped. Other programs' pending changes are left for `baremetal up`.
- `reset_gpu`: `nvidia-smi -r -i N`, only with watchdog.gpu_reset = true and no process at all on it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from baremetal.errors import BaremetalError
from baremetal.host.cordon import cordon, cordon_path, note_reset
from baremetal.host.nvml import GpuMonitor
from baremetal.plan.placement import Placement, place
from baremetal.supervisord.client import SupervisorClient
from baremetal.watchdog.evidence import Run


def cordon_faults(run_dir: Path, faults: dict[int, str], uuids: dict[int, str | None]) -> list[int]:
    """Cordon each faulted GPU; the ones newly cordoned."""
    path = cordon_path(run_dir)
    return [gpu for gpu, reason in sorted(faults.items()) if cordon(path, gpu, reason, uuids.get(gpu))]


class Placements:
    """Where the stack's pinned programs run now, given the cordon file (re-read when it changes)."""

    def __init__(self, stack: Any):
        self.path = cordon_path(stack.run_dir)
        self.pinned = [(m.program, m.gpus) for m in stack.models if stack.runs_here(m)] + \
                      [(p.name, p.gpus) for p in stack.programs if stack.runs_here(p)]
        self.spares = tuple(stack.stack.spare_gpus)
        self._stamp: tuple | None = None
        self._current: dict[str, Placement] = {}
        self.cordoned: frozenset[int] = frozenset()

    def current(self) -> dict[str, Placement]:
        """Program name -> Placement; cheap when the file did not change (one stat)."""
        from baremetal.host.cordon import cordoned_gpus

        try:
            status = os.stat(self.path)
            stamp = (status.st_mtime_ns, status.st_size)
        except OSError:
            stamp = None
        if stamp != self._stamp or not self._current:
            self._stamp = stamp
            self.cordoned = cordoned_gpus(self.path)
            self._current = place(self.pinned, self.spares, self.cordoned)
        return self._current


@dataclass(frozen=True)
class MoveResult:
    """What moving one program did."""

    gpus: tuple[int, ...] | None = None
    blocked: str | None = None
    started: bool = False
    error: str | None = None

    def summary(self, name: str) -> str:
        if self.error:
            return f"could not re-place {name}: {self.error}; it stays stopped"
        if self.blocked:
            return f"{name} stays stopped: {self.blocked}"
        where = ",".join(map(str, self.gpus or ()))
        return f"{name} re-placed on GPU {where} (CUDA_VISIBLE_DEVICES={where}){'; started' if self.started else ''}"


class Mover:
    """Re-renders the stack's files and applies one program's new file (the effects of re-placement)."""

    def __init__(self, stack: Any, load: Callable[[], Any] | None = None):
        self.stack = stack
        self.load = load or self._reload

    def _reload(self) -> Any:
        """The stack file as it is now (an operator may have edited it since the watchdog started)."""
        from baremetal.config import load_stack

        try:
            return load_stack(self.stack.source, node=self.stack.cluster.local if self.stack.cluster else None)
        except BaremetalError:
            return self.stack

    def move(self, client: SupervisorClient, name: str, start: bool) -> MoveResult:
        """Render the files for the current cordons and load `name`'s into supervisord; never raises."""
        from baremetal.plan.pipeline import generate

        try:
            generated = generate(self.load())
            spec = next((s for s in generated.specs if s.name == name), None)
            if spec is None:
                return MoveResult(error="it is no longer in the stack file")
            _added, changed, _removed = client.reload_config()
            if name in changed:
                client.stop(name)
                client.remove_group(name)
                client.add_group(name)           # autostart=true starts it; a blocked one stays stopped
                started = not spec.blocked
            else:
                started = start and not spec.blocked
                if started:
                    client.start(name, wait=False)
            return MoveResult(gpus=spec.gpus, blocked=spec.blocked, started=started)
        except (BaremetalError, OSError) as error:
            return MoveResult(error=str(error))


def reset_gpu(run_dir: Path, gpu: int, monitor: GpuMonitor | None, run: Run, nvidia_smi: str | None) -> str:
    """`nvidia-smi -r -i GPU` when nothing at all runs on it; what happened, in words (recorded in cordon.json)."""
    if nvidia_smi is None:
        outcome = "not reset: nvidia-smi is not installed"
    else:
        sample = next((s for s in (monitor.sample() if monitor and monitor.available else []) if s.index == gpu), None)
        if sample is None:
            outcome = "not reset: NVML does not answer for it"
        elif sample.processes:
            outcome = f"not reset: {len(sample.processes)} process(es) still use it ({', '.join(str(p.pid) for p in sample.processes)})"
        else:
            code, text = run([nvidia_smi, "-r", "-i", str(gpu)], 60.0)
            outcome = "reset with nvidia-smi -r: ok" if code == 0 else \
                f"nvidia-smi -r failed (exit {code}): {' '.join(text.split())[:200]}"
    note_reset(cordon_path(run_dir), gpu, outcome)
    return outcome
