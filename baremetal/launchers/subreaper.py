"""Become a child subreaper, set the umask, then exec the command (supervisord): what `up` and the systemd
unit start supervisord through. Standard library only.

    python -m baremetal.launchers.subreaper [--umask 027] -- COMMAND ARGS...

A subreaper (prctl PR_SET_CHILD_SUBREAPER, Linux 3.4+) adopts the orphans of its descendants: a daemon
that a program double-forks (`sh -c 'setsid daemon &'`) is re-parented to supervisord instead of init,
so it stays in the stack's process tree, where `down` finds and ends it. The attribute survives exec.
supervisord runs in the foreground (-n): a daemonising fork would leave the attribute behind, and a
foreground supervisord does not apply its own umask setting, so the umask is set here.
"""

import ctypes
import os
import sys

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """True when the kernel made this process a subreaper (False elsewhere than Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def main(argv: list) -> None:
    split = argv.index("--") if "--" in argv else -1
    if split < 0 or split == len(argv) - 1:
        sys.exit("usage: subreaper.py [--umask 027] -- COMMAND ARGS...")
    ours, command = argv[:split], argv[split + 1:]
    if "--umask" in ours:
        os.umask(int(ours[ours.index("--umask") + 1], 8))
    if not become_subreaper():
        print("subreaper.py: could not become a child subreaper; orphans of the programs go to init",
              file=sys.stderr, flush=True)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
