"""A typed client for one stack's supervisord, over XML-RPC on its unix socket.

The XML-RPC proxy is the seam: tests of code that drives supervisord may pass a recording fake as
`proxy`; everything else talks to the real daemon. Faults become baremetal errors naming the program.
"""

from __future__ import annotations

import http.client
import socket
import xml.parsers.expat
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baremetal.errors import NotRunningError, SupervisorError, UsageError
from baremetal.supervisord.states import ProcessState, SupervisorState

# supervisor.xmlrpc.Faults
FAULT_SHUTDOWN_STATE = 6
FAULT_BAD_NAME = 10
FAULT_ABNORMAL_TERMINATION = 40
FAULT_SPAWN_ERROR = 50
FAULT_ALREADY_STARTED = 60
FAULT_NOT_RUNNING = 70
FAULT_ALREADY_ADDED = 90


class SupervisorFault(SupervisorError):
    """supervisord answered with a fault; `code` is supervisor.xmlrpc.Faults' number."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout_s: float):
        super().__init__("localhost", timeout=timeout_s)
        self.socket_path = socket_path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class UnixTransport(xmlrpc.client.Transport):
    """XML-RPC over a unix socket, with a timeout (a wedged supervisord must not hang `status`)."""

    def __init__(self, socket_path: Path, timeout_s: float):
        super().__init__()
        self.socket_path = str(socket_path)
        self.timeout_s = timeout_s

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixConnection(self.socket_path, self.timeout_s)


@dataclass(frozen=True)
class ProcessInfo:
    """One program as supervisord sees it. Times are seconds since the epoch (0 = never)."""

    name: str
    group: str
    state: ProcessState
    pid: int
    start_s: float
    stop_s: float
    now_s: float
    exit_status: int
    spawn_error: str
    description: str
    stdout_logfile: str
    stderr_logfile: str

    @property
    def uptime_s(self) -> float | None:
        return self.now_s - self.start_s if self.state == ProcessState.RUNNING and self.start_s else None

    @classmethod
    def from_rpc(cls, info: dict[str, Any]) -> "ProcessInfo":
        return cls(name=info["name"], group=info["group"], state=ProcessState(info["state"]), pid=info["pid"],
                   start_s=info["start"], stop_s=info["stop"], now_s=info["now"], exit_status=info["exitstatus"],
                   spawn_error=info.get("spawnerr", ""), description=info.get("description", ""),
                   stdout_logfile=info.get("stdout_logfile", ""), stderr_logfile=info.get("stderr_logfile", ""))


class SupervisorClient:
    """Calls to one supervisord. Program names are supervisord names (group == name in baremetal)."""

    def __init__(self, socket_path: Path, timeout_s: float = 10.0, proxy: Any = None):
        self.socket_path = Path(socket_path)
        self.proxy = proxy or xmlrpc.client.ServerProxy(
            "http://localhost", transport=UnixTransport(self.socket_path, timeout_s), allow_none=True)

    # -- plumbing -----------------------------------------------------------------------------
    def _call(self, method: str, *args: Any, program: str | None = None) -> Any:
        try:
            return getattr(self.proxy.supervisor, method)(*args)
        except xmlrpc.client.Fault as fault:
            raise self._fault_error(fault, program) from None
        except (FileNotFoundError, ConnectionRefusedError):
            raise NotRunningError(f"supervisord is not running (no one answers on {self.socket_path}); "
                                  "start the stack with `baremetal up`") from None
        except xml.parsers.expat.ExpatError as error:
            # supervisord copies log bytes into its XML answers unescaped: a program that logs control
            # characters (Ray's and vLLM's colours) makes the answer unreadable.
            raise SupervisorError(f"supervisord's answer to {method} could not be read ({error})") from None
        except socket.timeout:
            raise SupervisorError(f"supervisord did not answer on {self.socket_path} in time; it may be "
                                  "overloaded or wedged (see its log under <root>/logs/supervisord.log)") from None
        except OSError as error:
            raise SupervisorError(f"cannot talk to supervisord on {self.socket_path}: {error}") from None

    @staticmethod
    def _fault_error(fault: xmlrpc.client.Fault, program: str | None) -> Exception:
        who = f"{program}: " if program else ""
        if fault.faultCode == FAULT_BAD_NAME:
            return UsageError(f"no program named {program or fault.faultString!r} in this stack; "
                              "`baremetal status` lists them")
        if fault.faultCode == FAULT_SPAWN_ERROR:
            return SupervisorError(f"{who}could not be started ({fault.faultString}); see `baremetal logs {program}`")
        if fault.faultCode == FAULT_ABNORMAL_TERMINATION:
            return SupervisorError(f"{who}did not stop cleanly ({fault.faultString})")
        if fault.faultCode == FAULT_SHUTDOWN_STATE:
            return SupervisorError("supervisord is shutting down")
        return SupervisorFault(f"{who}supervisord refused: {fault.faultString}", fault.faultCode)

    # -- daemon ---------------------------------------------------------------------------------
    def is_running(self) -> bool:
        """True when supervisord answers on the socket."""
        try:
            return self.state() == SupervisorState.RUNNING
        except SupervisorError:
            return False

    def state(self) -> SupervisorState:
        return SupervisorState(self._call("getState")["statecode"])

    def pid(self) -> int:
        return int(self._call("getPID"))

    def shutdown(self) -> None:
        self._call("shutdown")

    def reload_config(self) -> tuple[list[str], list[str], list[str]]:
        """Re-read the config files: (added, changed, removed) group names. Nothing is started or stopped."""
        added, changed, removed = self._call("reloadConfig")[0]
        return list(added), list(changed), list(removed)

    def add_group(self, name: str) -> None:
        try:
            self._call("addProcessGroup", name, program=name)
        except SupervisorFault as fault:
            if fault.code != FAULT_ALREADY_ADDED:
                raise

    def remove_group(self, name: str) -> None:
        self._call("removeProcessGroup", name, program=name)

    # -- processes ----------------------------------------------------------------------------
    def processes(self) -> list[ProcessInfo]:
        return [ProcessInfo.from_rpc(info) for info in self._call("getAllProcessInfo")]

    def process(self, name: str) -> ProcessInfo:
        return ProcessInfo.from_rpc(self._call("getProcessInfo", f"{name}:{name}", program=name))

    def start(self, name: str, wait: bool = True) -> None:
        """Start `name`; already running is fine."""
        try:
            self._call("startProcess", f"{name}:{name}", wait, program=name)
        except SupervisorFault as fault:
            if fault.code != FAULT_ALREADY_STARTED:
                raise

    def stop(self, name: str, wait: bool = True) -> None:
        """Stop `name` (its whole process group, per stopasgroup); not running is fine."""
        try:
            self._call("stopProcess", f"{name}:{name}", wait, program=name)
        except SupervisorFault as fault:
            if fault.code != FAULT_NOT_RUNNING:
                raise

    def signal(self, name: str, signal_name: str) -> None:
        """Send a signal ("HUP", "USR1", ...) to the program's process (not its group)."""
        self._call("signalProcess", f"{name}:{name}", signal_name, program=name)

    def tail(self, name: str, length: int = 4096, stderr: bool = False) -> str:
        """The last `length` bytes of a program's log. Read from the file supervisord writes (its XML-RPC
        answer breaks on the control characters that Ray and vLLM log); through XML-RPC when the file is
        not readable here."""
        info = self.process(name)
        path = info.stderr_logfile if stderr else info.stdout_logfile
        if path:
            try:
                with open(path, "rb") as handle:
                    handle.seek(0, 2)
                    handle.seek(max(0, handle.tell() - length))
                    return handle.read(length).decode("utf-8", errors="replace")
            except OSError:
                pass
        method = "tailProcessStderrLog" if stderr else "tailProcessStdoutLog"
        text, _offset, _overflow = self._call(method, f"{name}:{name}", 0, length, program=name)
        return text
