"""A stack that runs as its dedicated user (`[stack] user`): what under <root> that user owns, what it
only reads, and whether it can reach what it runs.

Run as root, `up` (and `install --systemd`) hands the folders that supervisord and the programs write
to the user: logs/, run/, evidence/ (0700: what the watchdog keeps of a hang), tmp/, cache/ and home/
(the programs' HOME: what they cache in ~ lands there).
supervisor/ stays root's with the user's group (folders 2750, so files rendered later get that group;
files 0640): supervisord rereads it as the user and cannot change it, so the user cannot make root's
next `up` run something else. envs/ and the models stay as they are, readable. Run as the user itself,
nothing changes hands.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

from baremetal.config.model import Stack
from baremetal.errors import UsageError
from baremetal.host.accounts import EXECUTE, READ, Account, can_reach, lookup

WRITABLE = ("logs", "run", "evidence", "tmp", "cache", "home")
PRIVATE = ("run", "evidence")                   # 0700: keys, stacks and log tails
Say = Callable[[str], None]


def home_dir(stack: Stack) -> Path:
    """HOME of the stack's programs when it runs as its own user (or under systemd)."""
    return stack.root / "home"


def account_of(stack: Stack, find: Callable[[str], Account | None] = lookup) -> Account | None:
    """The stack's user, or None when it has none; UsageError when the user does not exist."""
    name = stack.stack.user
    if name is None:
        return None
    account = find(name)
    if account is None:
        raise UsageError(f"[stack] user = {name!r}: there is no such user on this host; "
                         "`sudo baremetal install --systemd` creates it (a system user), or create it with useradd")
    return account


def prepare(stack: Stack, say: Say, account: Account | None = None, euid: int | None = None) -> None:
    """Give the stack's user what it must own, and check what it must reach (UsageError naming it)."""
    account = account or account_of(stack)
    if account is None:
        return
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        if euid != account.uid:
            raise UsageError(f"[stack] user = {account.name!r}: this stack runs as {account.name}; run this as "
                             f"root (supervisord then runs as {account.name}) or as {account.name} itself")
        return
    # run/ is small and root's `up` writes into it (FastChat's key file): looked through every time;
    # the others (caches of gigabytes) only when they were someone else's.
    changed = [name for name in WRITABLE if _hand_over(stack.root / name, account, every_time=name == "run")]
    for name in PRIVATE:
        os.chmod(stack.root / name, 0o700)
    if changed:
        say(f"handed {', '.join(changed)} under {stack.root} to user {account.name}")
    _share_read_only(stack.supervisor_dir, account)
    problems = reach_problems(stack, account)
    if problems:
        raise UsageError(f"[stack] user = {account.name!r} cannot reach what the stack needs: " + "; ".join(problems))


def reach_problems(stack: Stack, account: Account) -> list[str]:
    """What the user could not read or run, each with what to do."""
    from baremetal.config.api_keys import key_file_paths

    wanted = [(stack.source, READ, "the stack file"), (stack.root, EXECUTE, "the stack's root"),
              (Path(sys.executable), READ | EXECUTE, "baremetal's interpreter (supervisord, the gateway and the "
               "watchdog run on it: install baremetal where the user can read it)")]
    wanted += [(path, READ, "a key file") for path in key_file_paths(stack.api.key_specs)]
    wanted += [(Path(env.interpreter), READ | EXECUTE, f"env {name}'s interpreter")
               for name, env in sorted(stack.envs.items()) if Path(env.interpreter).exists()]
    wanted += [(model.path, READ | EXECUTE, f"model {model.name}'s folder") for model in stack.models
               if isinstance(model.path, Path) and model.path.is_dir()]
    return [f"{what} {path} (give it to group {account.group}, or make it readable)"
            for path, want, what in wanted if not can_reach(path, account, want)]


def _hand_over(top: Path, account: Account, every_time: bool = False) -> bool:
    """chown `top` (and, when `top` was someone else's or `every_time`, what under it is not the user's yet)
    to the user; True if `top` itself changed hands."""
    top.mkdir(parents=True, exist_ok=True)
    info = top.lstat()
    mine = (info.st_uid, info.st_gid) == (account.uid, account.gid)
    if mine and not every_time:
        return False
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(folder, name)
            if os.lstat(path).st_uid != account.uid:
                os.lchown(path, account.uid, account.gid)
    os.lchown(top, account.uid, account.gid)
    return not mine


def _share_read_only(supervisor_dir: Path, account: Account) -> None:
    for folder in (supervisor_dir, supervisor_dir / "conf.d"):
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, 0, account.gid)
        os.chmod(folder, 0o2750)
        for path in folder.iterdir():
            if path.is_file() and not path.is_symlink():
                os.chown(path, 0, account.gid)
                os.chmod(path, 0o640)
