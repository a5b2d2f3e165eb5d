"""Every process a stack started, found by more than its environment, so that `down` leaves none.

A program can shed what made it recognisable: a daemon that double-forks with a cleared environment in
a session of its own (`sh -c 'env -i setsid sleep 289 &'`) has neither supervisord's variables, nor the
program's process group, nor a parent in its tree. What still finds it:

- supervisord is a child subreaper (launchers/subreaper.py): an orphan anywhere below it is adopted by
  supervisord instead of init, so it stays in supervisord's process tree while supervisord runs;
- supervisord leads its own session: what did not call setsid is in it, even after supervisord is gone;
- where systemd runs the stack, its unit's cgroup holds everything the stack started;
- the watchdog writes what it sees of supervisord's tree to <root>/run/processes.json every few seconds
  (pid and start time, so a reused pid is never taken for ours): after supervisord was killed, that
  record still names the orphans it had adopted;
- and the old way: SUPERVISOR_SERVER_URL in the environment, which grandchildren usually keep.

What none of these catch: a process started on the stack's behalf by something outside it (`systemd-run`,
`at`, a container engine, ssh to another host), and an orphan that set up its own session after the
watchdog's last look at a supervisord that was then killed with SIGKILL (systemd's cgroup catches even
that one).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import psutil

from baremetal.host import processes
from baremetal.host.files import atomic_write

RECORD_EVERY_S = 5.0


def record_path(run_dir: Path) -> Path:
    return Path(run_dir) / "processes.json"


def snapshot(root_pid: int) -> list[dict]:
    """pid, start time and name of `root_pid`'s descendants."""
    seen = []
    for process in processes.descendants(root_pid):
        try:
            seen.append({"pid": process.pid, "create_s": process.create_time(), "name": process.name()})
        except psutil.Error:
            continue
    return seen


def write_record(path: Path, root_pid: int, seen: list[dict]) -> None:
    document = {"updated_s": round(time.time(), 3), "supervisord_pid": root_pid, "processes": seen}
    atomic_write(path, json.dumps(document), mode=0o600, durable=False)


def recorded(path: Path) -> list[psutil.Process]:
    """The recorded processes that still run: the same process (pid and start time), not a reused pid."""
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8")).get("processes") or []
    except (OSError, ValueError, AttributeError):
        return []
    alive = []
    for entry in entries:
        try:
            process = psutil.Process(int(entry["pid"]))
            if abs(process.create_time() - float(entry["create_s"])) < 0.05:
                alive.append(process)
        except (psutil.Error, KeyError, TypeError, ValueError):
            continue
    return alive


class RecordKeeper(threading.Thread):
    """The watchdog's thread that keeps processes.json current (rewritten only when the set changes)."""

    def __init__(self, path: Path, root_pid: int, every_s: float = RECORD_EVERY_S):
        super().__init__(name="process-record", daemon=True)
        self.path, self.root_pid, self.every_s = path, root_pid, every_s
        self.stopping = threading.Event()

    def run(self) -> None:
        written: set[tuple[int, float]] | None = None
        while not self.stopping.is_set():
            seen = snapshot(self.root_pid)
            keys = {(entry["pid"], entry["create_s"]) for entry in seen}
            if keys != written:
                try:
                    write_record(self.path, self.root_pid, seen)
                    written = keys
                except OSError as error:
                    print(f"baremetal watchdog: cannot write {self.path}: {error}", flush=True)
            self.stopping.wait(self.every_s)

    def stop(self) -> None:
        self.stopping.set()


def members(socket_path: Path, run_dir: Path, supervisord_pid: int | None, alive: bool) -> list[psutil.Process]:
    """Every live process of the stack but supervisord itself. `alive`: supervisord still runs (its tree
    and cgroup are then asked too; after it is gone, its session and the record are what is left)."""
    found: dict[int, psutil.Process] = {}

    def add(more: list[psutil.Process]) -> None:
        found.update({process.pid: process for process in more})

    add(processes.with_environment("SUPERVISOR_SERVER_URL", f"unix://{socket_path}"))
    add(recorded(record_path(run_dir)))
    if supervisord_pid:
        if alive:
            add(processes.descendants(supervisord_pid))
            add(processes.cgroup_members(supervisord_pid))
        if alive or not processes.is_alive(supervisord_pid):    # a reused pid leads someone else's session
            add(processes.in_session(supervisord_pid))
    found.pop(supervisord_pid or -1, None)
    return processes.not_mine(processes.still_alive(list(found.values())))
