"""Stacks of real HTTP upstreams (tests.gateway.upstream, run as [[program]] backends) behind the real
gateway, under real supervisord; and the gateway's metrics read as a client would."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import httpx

from tests.support.engine_envs import REPO
from tests.support.ports import free_ports
from tests.support.running import Running, start_stack


def upstream_program(name: str, port: int, model: str, task: str = "chat") -> str:
    """A [[program]] table: the upstream `up-NAME` on `port`, serving `model` (of `task`) through the gateway."""
    return f'''
[[program]]
name = "up-{name}"
command = ["{sys.executable}", "-m", "tests.gateway.upstream", "--port", "{port}", "--name", "up-{name}"]
directory = "{REPO}"
health = "http://127.0.0.1:{port}/health"
serves = {{ model = "{model}", task = "{task}", url = "http://127.0.0.1:{port}" }}
'''


def dead_program(port: int, model: str) -> str:
    """A [[program]] that runs but serves `model` on a port where nothing listens."""
    return f'''
[[program]]
name = "up-dead"
command = ["sleep", "100000"]
serves = {{ model = "{model}", task = "chat", url = "http://127.0.0.1:{port}" }}
'''


@contextlib.contextmanager
def upstream_stack(names: tuple[str, ...], stack_text: Callable[[Path, dict[str, int]], str]) -> Iterator[Running]:
    """Free ports for the gateway, each upstream NAME and "dead"; the stack file `stack_text(root, ports)`
    started and serving (upstreams and gateway answer); stopped and removed after. `running.ports` has them."""
    root = Path(tempfile.mkdtemp(prefix="bm-gw-", dir="/tmp"))
    ports = dict(zip(("gateway", *names, "dead"), free_ports(len(names) + 2)))
    stack_file = root / "baremetal.toml"
    stack_file.write_text(stack_text(root, ports), encoding="utf-8")
    running = start_stack(stack_file)
    try:
        running.wait_serving([f"http://127.0.0.1:{ports[n]}/health" for n in names] + [f"{running.gateway_url}/health"],
                             timeout_s=60)
        running.ports = ports
        yield running
    finally:
        running.stop()
        shutil.rmtree(root, ignore_errors=True)


def gateway_counter(gateway_url: str, name: str, model: str, headers: dict | None = None) -> int:
    """The value of baremetal_gateway_NAME{model="MODEL"} on the gateway's /metrics (0 when absent)."""
    text = httpx.get(gateway_url + "/metrics", headers=headers).text
    line = f'baremetal_gateway_{name}{{model="{model}"}} '
    return next((int(float(row[len(line):])) for row in text.splitlines() if row.startswith(line)), 0)
