"""System users, as the stack's dedicated user needs them: who they are (pwd/grp), and whether one of
them can reach a path, judged from the permission bits (no switching users to try)."""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

READ, WRITE, EXECUTE = 4, 2, 1


@dataclass(frozen=True)
class Account:
    """A system user and the groups it is in."""

    name: str
    uid: int
    gid: int
    group: str                     # its primary group's name
    groups: frozenset[int]         # every gid it has (primary and supplementary)
    home: str


def lookup(name: str) -> Account | None:
    """The user `name`, or None when there is none."""
    try:
        record = pwd.getpwnam(name)
    except KeyError:
        return None
    try:
        group = grp.getgrgid(record.pw_gid).gr_name
    except KeyError:
        group = str(record.pw_gid)
    extra = {entry.gr_gid for entry in grp.getgrall() if name in entry.gr_mem}
    return Account(name, record.pw_uid, record.pw_gid, group, frozenset(extra | {record.pw_gid}), record.pw_dir)


def existing_groups(names: tuple[str, ...]) -> list[str]:
    """Those of `names` that are groups on this host."""
    found = []
    for name in names:
        try:
            grp.getgrnam(name)
            found.append(name)
        except KeyError:
            continue
    return found


def allowed(mode: int, owner: int, group: int, account: Account, want: int) -> bool:
    """Whether `account` has the `want` bits (READ|WRITE|EXECUTE) on an object with this mode and owner. Pure."""
    if account.uid == 0:
        return True
    if account.uid == owner:
        bits = (mode >> 6) & 7
    elif group in account.groups:
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    return bits & want == want


def can_reach(path: Path, account: Account, want: int) -> bool:
    """Whether `account` may search every folder above `path` and has the `want` bits on `path` itself
    (False when it does not exist). Symbolic links are followed: what counts is where they lead."""
    path = Path(os.path.realpath(path))
    for index, part in enumerate([path, *path.parents]):
        try:
            info = part.stat()
        except OSError:
            return False
        if not allowed(info.st_mode, info.st_uid, info.st_gid, account, want if index == 0 else EXECUTE):
            return False
    return True
