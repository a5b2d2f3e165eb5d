"""A tiny random Qwen2 chat model for end-to-end tests, made locally (no hub is reachable).

A byte-level BPE tokenizer is trained with `tokenizers` on a few local sentences, and a 2-layer Qwen2
with head_dim 32 (vLLM's CPU attention needs >= 32) gets random weights. Made with an engine env's own
Python (it has torch and transformers) and cached under $BAREMETAL_TEST_CACHE/models.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.engine_envs import CACHE

MAKER = r'''
import sys
from pathlib import Path
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

out = Path(sys.argv[1])
lines = ["The quick brown fox jumps over the lazy dog.", "Bare metal servers run language models.",
         "Supervisord starts programs and restarts them when they stop.", "Hello, how are you today?",
         "A watchdog restarts workers that hang, not only those that die."] * 20
tokenizer = Tokenizer(models.BPE())
tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tokenizer.decoder = decoders.ByteLevel()
special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
tokenizer.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=400, special_tokens=special,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>")
fast.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                      "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
fast.save_pretrained(out)
config = Qwen2Config(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                     tie_word_embeddings=True, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
torch.manual_seed(0)
Qwen2ForCausalLM(config).save_pretrained(out)
'''


def tiny_chat_model(python: Path, name: str = "tiny-qwen2") -> Path:
    """The model folder (config.json, safetensors, tokenizer), made once with `python` and cached as `name`
    (a model saved by transformers 5 does not load in transformers 4: FastChat's env needs its own)."""
    target = CACHE / "models" / name
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-qwen2.", dir=target.parent))
    try:
        subprocess.run([str(python), "-c", MAKER, str(staging)], check=True, timeout=600,
                       env=dict(os.environ, HF_HUB_OFFLINE="1"), stdin=subprocess.DEVNULL)
        try:
            staging.rename(target)                # atomic: a half-made model is never seen
        except OSError:
            if not (target / "config.json").exists():   # not a parallel run that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
