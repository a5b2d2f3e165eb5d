"""Helpers for tests that run stacks under real supervisord: stack files with small real HTTP servers,
the CLI as an operator runs it, polling with deadlines, and cleanup that leaves no process behind."""

from __future__ import annotations

import json
import signal
import sys
import textwrap
from pathlib import Path

import psutil
from click.testing import CliRunner

from baremetal.cli import cli

SERVER = Path(__file__).resolve().parent / "servers" / "health_server.py"


def server_command(port: int, *extra: str) -> list[str]:
    """argv of the test HTTP server (/health 200 once ready)."""
    return [sys.executable, str(SERVER), "--port", str(port), *extra]


def program_toml(name: str, argv: list[str], health_port: int | None = None, startsecs: int = 1,
                 extra: str = "") -> str:
    """One [[program]] table."""
    lines = ["[[program]]", f'name = "{name}"', f"command = {json.dumps(argv)}", f"startsecs = {startsecs}"]
    if health_port:
        lines.append(f'health = "http://127.0.0.1:{health_port}/health"')
    return "\n".join(lines) + ("\n" + extra if extra else "") + "\n"


def stack_toml(name: str, programs: list[str], root: str = "state") -> str:
    """A stack with only [[program]] entries: no API server, no watchdog."""
    head = textwrap.dedent(f'''
        [stack]
        name = "{name}"
        root = "{root}"
        [api]
        kind = "none"
        [watchdog]
        enabled = false
    ''')
    return head + "\n" + "\n".join(programs)


def run(*args: str, obj: dict | None = None):
    """The CLI as a user runs it (never raises: the exit code and output tell)."""
    return CliRunner().invoke(cli, list(args), obj=obj)


def status_json(config: Path) -> dict:
    result = run("status", "--json", "-c", str(config))
    assert result.exit_code in (0, 1, 3), result.output
    return json.loads(result.stdout)


def programs_by_name(config: Path) -> dict[str, dict]:
    return {row["name"]: row for row in status_json(config)["programs"]}


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def force_down(root: Path) -> None:
    """Last-resort cleanup after a test: end supervisord and every process it started, by pid."""
    pidfile = root / "run" / "supervisord.pid"
    marker = f"unix://{root / 'run' / 'supervisor.sock'}"
    victims = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("SUPERVISOR_SERVER_URL") == marker:
                victims.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    try:
        victims.append(psutil.Process(int(pidfile.read_text().strip())))
    except (OSError, ValueError, psutil.NoSuchProcess):
        pass
    for process in victims:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=5)


def child_pid_from_log(log: Path, label: str) -> int:
    """The pid the test server printed as "<label> pid N"."""
    for line in log.read_text().splitlines():
        if line.startswith(f"{label} pid "):
            return int(line.split()[-1])
    raise AssertionError(f"no '{label} pid' line in {log}")


