"""PyTorch's NCCL flight recorder for programs on more than one GPU: the environment that turns it on,
and collecting its dumps into an evidence folder.

The recorder keeps a ring buffer of the last collectives each rank issued (TORCH_NCCL_TRACE_BUFFER_SIZE,
TORCH_FR_BUFFER_SIZE from PyTorch 2.6 on) and writes it to <prefix><rank> on a collective timeout
(TORCH_NCCL_DUMP_ON_TIMEOUT) or when a byte is written to the named pipe <prefix><rank>.pipe
(TORCH_NCCL_DEBUG_INFO_PIPE_FILE; a rank's NCCL watchdog thread polls it about once a second). The
watchdog writes to every pipe before it stops a stuck program, waits briefly for the dumps, and copies
them. Only collectives that go through torch.distributed's NCCL process group are recorded: vLLM's
tensor-parallel all-reduce uses its own NCCL wrapper and custom kernels, which it does not see.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

TRACE_ENTRIES = 2000


def trace_prefix(root: Path, program: str) -> str:
    """Where a program's ranks write their dumps and make their pipes (<root>/tmp exists for every stack)."""
    return str(Path(root) / "tmp" / f"nccl-trace-{program}.rank")


def environment(prefix: str) -> dict[str, str]:
    """The variables that turn the recorder on (old and new names: the env's torch reads one of them)."""
    return {"TORCH_NCCL_TRACE_BUFFER_SIZE": str(TRACE_ENTRIES), "TORCH_FR_BUFFER_SIZE": str(TRACE_ENTRIES),
            "TORCH_NCCL_DUMP_ON_TIMEOUT": "1", "TORCH_NCCL_DEBUG_INFO_TEMP_FILE": prefix,
            "TORCH_FR_DUMP_TEMP_FILE": prefix, "TORCH_NCCL_DEBUG_INFO_PIPE_FILE": prefix}


def _dumps(prefix: str) -> list[Path]:
    folder, stem = Path(prefix).parent, Path(prefix).name
    return sorted(p for p in folder.glob(f"{stem}*") if p.name[len(stem):].isdigit() and p.is_file())


def _pipes(prefix: str) -> list[Path]:
    folder, stem = Path(prefix).parent, Path(prefix).name
    return sorted(p for p in folder.glob(f"{stem}*.pipe") if p.name[len(stem):-len(".pipe")].isdigit())


def trigger(prefix: str) -> list[str]:
    """Ask every rank with a pipe to dump now; the ranks that took the request."""
    asked = []
    for pipe in _pipes(prefix):
        try:
            handle = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            continue                    # ENXIO: nobody reads it (that rank is gone)
        try:
            os.write(handle, b"dump\n")
            asked.append(pipe.name[len(Path(prefix).name):-len(".pipe")])
        except OSError:
            pass
        finally:
            os.close(handle)
    return asked


def collect(prefix: str, target: Path, wait_s: float) -> list[str]:
    """Trigger the dumps, wait up to `wait_s` for each asked rank's file to be (re)written, copy every dump
    into `target`; the names copied, each with whether it is fresh."""
    started = time.time()
    asked = trigger(prefix)
    stem = Path(prefix).name
    deadline = time.monotonic() + max(0.0, wait_s)
    while asked and time.monotonic() < deadline:
        fresh = {p.name[len(stem):] for p in _dumps(prefix) if p.stat().st_mtime >= started}
        if set(asked) <= fresh:
            break
        time.sleep(0.1)
    copied = []
    for dump in _dumps(prefix):
        target.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copyfile(dump, target / f"rank{dump.name[len(stem):]}")
        age = "fresh" if dump.stat().st_mtime >= started else "older"
        copied.append(f"rank{dump.name[len(stem):]} ({age}, {dump.stat().st_size} bytes)")
    return copied
