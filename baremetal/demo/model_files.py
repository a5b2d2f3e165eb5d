"""What the demo model makers share: progress lines, JSON and weight files, the seed, and the text corpus
their tokenizers are built from. Standard library at import (torch is imported where weights are saved);
run by an engine env's interpreter beside make_models.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

if __package__:
    from baremetal.demo import fixed_chats as chats
else:   # run as a script by another interpreter: this file's folder is sys.path[0]
    import fixed_chats as chats  # type: ignore[no-redef]

SEED = 1234


def log(name: str, message: str) -> None:
    """One progress line, flushed at once (the CLI streams it through)."""
    print(f"[{name}] {message}", flush=True)


def write_json(path: Path, value: object) -> None:
    """Pretty JSON, UTF-8, as the hub's own config files are written."""
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def save_weights(model, folder: Path) -> None:
    """model.safetensors, readable by every engine (no pickles)."""
    from safetensors.torch import save_file

    state = {key: tensor.detach().contiguous().clone() for key, tensor in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    os.chmod(folder / "model.safetensors", 0o644)     # save_file creates it 0600; engines may run as others


# -- corpus for the tokenizers ----------------------------------------------------------------------

CITIES = ["Paris", "Tokyo", "Berlin", "London", "Madrid", "Rome", "Cairo", "Lima", "Oslo", "Delhi"]
CONDITIONS = ["sunny", "cloudy", "rainy", "windy", "snowy", "foggy"]
SUBJECTS = ["The cat", "A dog", "The model", "Our server", "The engineer", "A small bird", "The train"]
VERBS = ["runs", "sleeps", "answers", "waits", "starts", "stops", "reads", "writes", "serves", "learns"]
OBJECTS = ["in the park", "on the mat", "every morning", "under the table", "with a smile", "all day",
           "on the GPU", "in the queue", "before noon", "after the rain"]


def corpus_lines() -> list[str]:
    """Plain English, weather talk, JSON and numbers: enough for a BPE that splits any text sensibly."""
    lines = [f"{s} {v} {o}." for s in SUBJECTS for v in VERBS for o in OBJECTS]
    lines += [f"It is {c} in {city} today, {t} degrees Celsius." for city in CITIES for c in CONDITIONS
              for t in (3, 18)]
    lines += [json.dumps({"city": city, "temperature_c": t, "condition": c})
              for city in CITIES for c in CONDITIONS[:3] for t in (7, 21)]
    lines += [f"{a} plus {b} is {a + b}. Is {a} a prime number?" for a in range(12) for b in range(3)]
    lines += [chats.RERANK_QUERY] + chats.RERANK_DOCUMENTS + chats.EMBED_SENTENCES
    lines += ["What is the capital of Germany? Berlin is the capital of Germany.",
              "Bananas are yellow and sweet. Apples are red or green.",
              "Europe has many countries: France, Spain, Italy and Germany."]
    return lines
