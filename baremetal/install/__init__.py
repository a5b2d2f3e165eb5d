"""`baremetal install`: runtime environments (plan, build, lock), host facts, and the systemd unit.

plan.py and packages.py decide (pure); host.py and nvidia.py look at the host; build.py runs the plan
through the subprocess seam (runner.py); systemd.py renders and installs the boot unit.
"""

from __future__ import annotations

from typing import Mapping

from baremetal.config.model import Stack
from baremetal.install.host import env_state
from baremetal.install.plan import EnvPlan, InstallHost, plan_install


def plan_stack(stack: Stack, host: InstallHost, only: tuple[str, ...] = (), rebuild: bool = False,
               states: Mapping | None = None) -> list[EnvPlan]:
    """Plans for the stack's envs as they stand on disk now."""
    states = states or {name: env_state(env) for name, env in stack.envs.items()}
    return plan_install(stack, host, states, only, rebuild)
