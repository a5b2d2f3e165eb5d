"""Small launchers run by *other* interpreters (FastChat's env, the cluster's Ray env): standard library
only. Rendered commands name them by path, as `launcher_path(NAME)`."""

from __future__ import annotations

from pathlib import Path

LAUNCHERS_DIR = Path(__file__).resolve().parent


def launcher_path(name: str) -> Path:
    """The file of launcher `name` (e.g. "ray_monitor"), in the checkout or the installed package."""
    return LAUNCHERS_DIR / f"{name}.py"
