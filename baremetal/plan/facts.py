"""Look at the host for what the plan needs: baremetal's interpreter, each env's vLLM build, open-file limits
and the cluster's Ray env. The I/O of planning lives here; plan.py stays pure."""

from __future__ import annotations

import subprocess
import sys

from baremetal.config.model import Env, Stack, frozen_mapping
from baremetal.engines.fastchat import chat_template_text, default_conv_template
from baremetal.engines.versions import vllm_build
from baremetal.host.cordon import cordon_path, cordoned_gpus
from baremetal.plan.spec import HostFacts


def gather_facts(stack: Stack) -> HostFacts:
    """Look at the host: baremetal's own interpreter, the vLLM build of each env that runs vLLM here, and
    what the cluster's Ray env holds."""
    envs = {m.env for m in stack.models if m.engine in ("vllm", "fastchat-vllm") and stack.runs_here(m)}
    ray_client = False
    if stack.cluster:
        ray_client = ray_client_installed(stack.envs[stack.cluster.env])
    return HostFacts(baremetal_python=sys.executable,
                     vllm_builds=frozen_mapping({name: vllm_build(stack.envs[name]) for name in sorted(envs)}),
                     minfds=_minfds(), ray_client=ray_client, cordoned=cordoned_gpus(cordon_path(stack.run_dir)),
                     conv_templates=frozen_mapping(conv_templates(stack)))


def conv_templates(stack: Stack) -> dict[str, str]:
    """FastChat worker program -> the FastChat conversation template that matches its model's own chat template
    (read from the model folder), for workers whose args name none."""
    chosen = {}
    for model in stack.models:
        if model.engine == "fastchat" and stack.runs_here(model) and "--conv-template" not in model.args:
            template = default_conv_template(chat_template_text(model.path))
            if template:
                chosen[model.program] = template
    return chosen


def _minfds(wanted: int = 65536) -> int:
    """65536 open files for engines serving many connections, but no more than the hard limit:
    supervisord refuses to start when it cannot raise its limit to minfds (containers often forbid it,
    root or not). Raise the hard limit (LimitNOFILE= in systemd, limits.conf) to get more."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


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
