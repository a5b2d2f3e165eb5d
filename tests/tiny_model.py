"""A tiny random Qwen2 chat model for real vLLM tests, made once and cached (no model hub here).

Random weights, a byte-level BPE trained with `tokenizers` on local text, a ChatML template; built by
the vLLM env's own interpreter (it has torch and transformers), under a file lock. Until
`baremetal demo-models` lands, this is the model the watchdog's vLLM tests serve.
"""

from __future__ import annotations

import fcntl
import subprocess
from pathlib import Path

from tests.engine_envs import CACHE

BUILD = r'''
import pathlib, sys
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

out = pathlib.Path(sys.argv[1])
texts = [p.read_text(errors="ignore") for p in sorted(pathlib.Path(torch.__file__).parent.glob("*.py"))][:40]
tokenizer = Tokenizer(models.BPE())
tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tokenizer.decoder = decoders.ByteLevel()
tokenizer.train_from_iterator(texts, trainers.BpeTrainer(
    vocab_size=512, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>")
fast.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                      "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
fast.save_pretrained(out)
torch.manual_seed(0)
config = Qwen2Config(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                     eos_token_id=fast.eos_token_id, tie_word_embeddings=True)
Qwen2ForCausalLM(config).save_pretrained(out)
(out / ".complete").write_text("ok")
'''


def tiny_qwen2(python: Path) -> Path:
    """The model folder (head_dim 32: vLLM's CPU attention needs >= 32), built with `python` if missing."""
    target = CACHE / "models" / "tiny-qwen2-h64"
    if (target / ".complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".tiny-qwen2.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / ".complete").exists():
            subprocess.run([str(python), "-c", BUILD, str(target)], check=True, capture_output=True)
    return target
