"""A small real stack for the live view's tests and bench: [[program]] upstreams (tests.gateway.upstream,
an OpenAI-style server that answers at once) serving models behind the real gateway, the real watchdog,
and an idle program; every port free, chosen here."""

from __future__ import annotations

import sys

from tests.support.engine_envs import REPO
from tests.support.ports import free_ports


def upstream_stack_toml(name: str, key: str, upstreams: list[tuple[str, str]]) -> str:
    """The stack file: one [[program]] per (program name, model) in `upstreams`, then "idle"."""
    gateway, metrics, *ports = free_ports(2 + len(upstreams))
    tables = "".join(f'''
[[program]]
name = "{program}"
command = ["{sys.executable}", "-m", "tests.gateway.upstream", "--port", "{port}", "--name", "{program}"]
directory = "{REPO}"
startsecs = 1
health = "http://127.0.0.1:{port}/health"
serves = {{ model = "{model}", task = "chat", url = "http://127.0.0.1:{port}" }}
''' for (program, model), port in zip(upstreams, ports))
    return f'''[stack]
name = "{name}"
root = "state"
[api]
port = {gateway}
api_keys = ["{key}"]
[watchdog]
metrics_port = {metrics}
{tables}
[[program]]
name = "idle"
command = ["sleep", "100000"]
startsecs = 1
'''
