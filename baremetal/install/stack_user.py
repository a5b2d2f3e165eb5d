"""The stack's dedicated user (`[stack] user`), created or checked by `install --systemd`.

A missing user is created as a system user with no login and no home of its own (its HOME is
<root>/home, set by the unit and supervisord.conf), in the groups that GPU device nodes are often
given to (video, render) where the host has them. An existing user is used as it is, but never root
(naming root is the same as naming no user). useradd goes through the subprocess seam.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Callable

from baremetal.config.model import Stack
from baremetal.errors import BaremetalError, UsageError
from baremetal.host.accounts import Account, existing_groups, lookup
from baremetal.install.runner import CommandRunner
from baremetal.stack.ownership import home_dir

DEVICE_GROUPS = ("video", "render")


@dataclass(frozen=True)
class StackUser:
    account: Account | None        # None: the stack has no user of its own (it runs as root)
    created: tuple[str, ...] = ()  # the command that created it, when this run did


def useradd_argv(name: str, stack: Stack, groups: list[str]) -> tuple[str, ...]:
    """The useradd command for the stack's user. Pure."""
    shell = next((path for path in ("/usr/sbin/nologin", "/sbin/nologin") if shutil.which(path)), "/bin/false")
    argv = ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", str(home_dir(stack)),
            "--shell", shell, "--comment", f"baremetal stack {stack.stack.name}"]
    if groups:
        argv += ["--groups", ",".join(groups)]
    return (*argv, name)


def ensure_user(stack: Stack, runner: CommandRunner, find: Callable[[str], Account | None] = lookup,
                groups: Callable[[tuple[str, ...]], list[str]] = existing_groups) -> StackUser:
    """The stack's user, created when it does not exist yet."""
    name = stack.stack.user
    if name is None:
        return StackUser(None)
    account = find(name)
    if account is not None and account.uid == 0:
        raise UsageError(f"[stack] user = {name!r} is root: leave the key out to run as root, or name a user of its own")
    if account is not None:
        return StackUser(account)
    argv = useradd_argv(name, stack, groups(DEVICE_GROUPS))
    result = runner.run(argv, timeout_s=60)
    if not result.ok:
        raise BaremetalError(f"could not create the stack's user {name!r} (`{' '.join(argv)}`): "
                             f"{' '.join(result.tail(3))}; run it as root, or create the user yourself")
    account = find(name)
    if account is None:
        raise BaremetalError(f"`{' '.join(argv)}` succeeded but there is no user {name!r} afterwards")
    return StackUser(account, argv)
