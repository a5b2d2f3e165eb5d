"""`baremetal pull`: download a model into models_dir with the hub's own client (resumable, with progress).

huggingface_hub and modelscope are imported only here, when a pull runs (`pip install 'baremetal[pull]'`).
Both download into a plain folder (local_dir) that a [[model]] path points at, skip files already there,
and resume partial files. HF_ENDPOINT (Hugging Face mirrors) and MODELSCOPE_ENDPOINT are honoured by the
clients themselves.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from baremetal.errors import BaremetalError, UsageError

SOURCES = ("hf", "modelscope")
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?\Z")


@dataclass(frozen=True)
class Pull:
    repo_id: str
    source: str                 # hf | modelscope
    revision: str | None
    target: Path


def check_repo_id(repo_id: str) -> str:
    """ORG/NAME or NAME, and nothing that could climb out of models_dir."""
    if not _REPO_ID.match(repo_id) or ".." in repo_id.split("/"):
        raise UsageError(f"{repo_id!r} is not a model id; expected ORG/NAME, e.g. Qwen/Qwen2.5-7B-Instruct")
    return repo_id


def pull_target(repo_id: str, models_dir: Path | None, into: Path | None) -> Path:
    """Where the model goes: --to DIR, else <models_dir>/<ORG>/<NAME> (a [[model]] path of "ORG/NAME")."""
    if into is not None:
        return into
    if models_dir is None:
        raise UsageError("the stack file sets no [stack].models_dir; set it, or pass --to DIR")
    return models_dir / check_repo_id(repo_id)


def _hf(pull: Pull) -> Path:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise UsageError("HF_HUB_OFFLINE is set in this shell, so huggingface_hub will not download; "
                         "run `env -u HF_HUB_OFFLINE baremetal pull ...`")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
    except ImportError:
        raise BaremetalError("pulling from Hugging Face needs huggingface_hub: pip install 'baremetal[pull]'") from None
    try:
        return Path(snapshot_download(pull.repo_id, revision=pull.revision, local_dir=str(pull.target)))
    except RepositoryNotFoundError:
        raise BaremetalError(f"no model {pull.repo_id!r} on the hub (or it is private: log in with `hf auth login` "
                             "or set HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise BaremetalError(f"model {pull.repo_id!r} has no revision {pull.revision!r}") from None
    except (HfHubHTTPError, OSError) as error:
        raise BaremetalError(f"downloading {pull.repo_id} failed: {error}; run the same command again to resume "
                             "(files already complete are kept)") from None


def _modelscope(pull: Pull) -> Path:
    try:
        from modelscope import snapshot_download
    except ImportError:
        raise BaremetalError("pulling from ModelScope needs modelscope: pip install 'baremetal[pull]'") from None
    try:
        return Path(snapshot_download(pull.repo_id, revision=pull.revision, local_dir=str(pull.target)))
    except Exception as error:  # noqa: BLE001 - modelscope raises plain exceptions of many kinds
        raise BaremetalError(f"downloading {pull.repo_id} from ModelScope failed: {error}; run the same "
                             "command again to resume") from None


DOWNLOADERS: dict[str, Callable[[Pull], Path]] = {"hf": _hf, "modelscope": _modelscope}


def pull_model(pull: Pull) -> Path:
    """Download (or finish downloading) the model; returns its folder."""
    if pull.source not in DOWNLOADERS:
        raise UsageError(f"unknown source {pull.source!r}; use one of {', '.join(SOURCES)}")
    try:
        pull.target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BaremetalError(f"cannot create {pull.target}: {error.strerror}") from None
    return DOWNLOADERS[pull.source](pull)
