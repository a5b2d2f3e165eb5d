"""What a cluster's Ray env holds, looked up on disk (no import of Ray), for plan's HostFacts."""

from __future__ import annotations

import subprocess

from baremetal.config.model import Env


def ray_client_installed(env: Env) -> bool:
    """Whether `env` has Ray client's dependency (grpcio): then `ray start --head` starts a client server."""
    if env.kind == "system":
        try:
            result = subprocess.run([env.interpreter, "-c", "import grpc"], capture_output=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return False
        return result.returncode == 0
    if env.path is None:
        return False
    return any(env.path.glob("lib/python3*/site-packages/grpcio-*.dist-info"))
