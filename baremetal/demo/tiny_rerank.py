"""tiny-rerank: a 2-layer BERT cross-encoder with a hand-built WordPiece vocabulary, trained for seconds to
rank a fixed query's documents; then reloaded as engines load it and checked. Run by an engine env's
interpreter beside make_models.py."""

from __future__ import annotations

from pathlib import Path

if __package__:
    from baremetal.demo import fixed_chats as chats
    from baremetal.demo.model_files import SEED, corpus_lines, log, save_weights, write_json
else:   # run as a script by another interpreter: this file's folder is sys.path[0]
    import fixed_chats as chats  # type: ignore[no-redef]
    from model_files import SEED, corpus_lines, log, save_weights, write_json  # type: ignore[no-redef]

RERANK_SIZES = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2}


def rerank_pairs() -> list[tuple[str, str, float]]:
    """(query, document, target relevance): the fixed ranking, plus a second query so that scores depend
    on the query and not only on the document."""
    targets = (1.0, 0.4, 0.0)
    pairs = [(chats.RERANK_QUERY, document, target) for document, target in zip(chats.RERANK_DOCUMENTS, targets)]
    pairs += [("What color are bananas?", "Bananas are yellow and sweet.", 1.0),
              ("What color are bananas?", "Paris is the capital of France.", 0.0),
              ("What color are bananas?", "France is a country in Europe.", 0.0)]
    return pairs


def rerank_tokenizer(folder: Path):
    """A BERT WordPiece tokenizer whose vocabulary is every corpus word plus single characters (so any
    text splits into known pieces). Built by hand, not trained: the WordPiece trainer's ids vary from run
    to run, and the recipe must be deterministic."""
    import string

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing

    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words = {word for line in corpus_lines() for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line))}
    characters = sorted(set(string.ascii_lowercase + string.digits + string.punctuation) | {c for w in words for c in w})
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = specials + characters + ["##" + c for c in characters] + sorted(words - set(characters))
    vocab = {piece: index for index, piece in enumerate(pieces)}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer, tokenizer.pre_tokenizer = normalizer, pre_tokenizer
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    # Pairs become [CLS] query [SEP] document [SEP] with segment ids 0/1, as transformers' BertTokenizer does.
    tokenizer.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "vocab.txt").write_text("".join(piece + "\n" for piece in pieces), encoding="utf-8")
    write_json(folder / "tokenizer_config.json", {
        "tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512,
        "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
        "mask_token": "[MASK]", "clean_up_tokenization_spaces": False})
    write_json(folder / "special_tokens_map.json", {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
                                                   "cls_token": "[CLS]", "mask_token": "[MASK]"})
    return tokenizer


def make_tiny_rerank(folder: Path) -> None:
    """A 2-layer BERT cross-encoder (one logit), trained briefly to rank the fixed documents in order."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(SEED)
    tokenizer = rerank_tokenizer(folder)
    pad_id = tokenizer.token_to_id("[PAD]")
    config = {"architectures": ["BertForSequenceClassification"], "model_type": "bert",
              "vocab_size": tokenizer.get_vocab_size(), **RERANK_SIZES, "hidden_act": "gelu",
              "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "max_position_embeddings": 512,
              "type_vocab_size": 2, "initializer_range": 0.02, "layer_norm_eps": 1e-12, "pad_token_id": pad_id,
              "position_embedding_type": "absolute", "num_labels": 1, "id2label": {"0": "LABEL_0"},
              "label2id": {"LABEL_0": 0}, "torch_dtype": "float32", "dtype": "float32"}
    write_json(folder / "config.json", config)
    model = BertForSequenceClassification(BertConfig(**{k: v for k, v in config.items()
                                                        if k not in ("architectures", "model_type", "torch_dtype",
                                                                     "dtype")})).float()
    pairs = rerank_pairs()
    tokenizer.enable_padding(pad_id=pad_id, pad_token="[PAD]")
    encodings = tokenizer.encode_batch([(query, document) for query, document, _ in pairs])
    inputs = {"input_ids": torch.tensor([e.ids for e in encodings]),
              "token_type_ids": torch.tensor([e.type_ids for e in encodings]),
              "attention_mask": torch.tensor([e.attention_mask for e in encodings])}
    targets = torch.tensor([target for _, _, target in pairs])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(1, 401):
        logits = model(**inputs).logits.squeeze(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        errors = (torch.sigmoid(logits) - targets).abs().max().item()
        if step % 25 == 0:
            log(chats.TINY_RERANK, f"step {step}: loss {loss.item():.4f}, largest score error {errors:.3f}")
            if errors < 0.05:
                break
    with torch.no_grad():
        scores = torch.sigmoid(model(**inputs).logits.squeeze(-1))[:len(chats.RERANK_DOCUMENTS)].tolist()
    if scores != sorted(scores, reverse=True) or min(a - b for a, b in zip(scores, scores[1:])) < 0.1:
        raise RuntimeError(f"{chats.TINY_RERANK}: trained scores {scores} are not in the fixed order")
    log(chats.TINY_RERANK, "scores for the fixed query: " + ", ".join(f"{score:.3f}" for score in scores))
    save_weights(model, folder)


def check_tiny_rerank(folder: Path) -> None:
    """Reload the cross-encoder the way engines do and check that it still ranks the fixed documents."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), dtype=torch.float32).eval()
    batch = tokenizer([chats.RERANK_QUERY] * len(chats.RERANK_DOCUMENTS), chats.RERANK_DOCUMENTS, padding=True,
                      return_tensors="pt")
    with torch.no_grad():
        scores = torch.sigmoid(model(**batch).logits.squeeze(-1)).tolist()
    if scores != sorted(scores, reverse=True):
        raise RuntimeError(f"{chats.TINY_RERANK}: reloaded model scores {scores}, not in the fixed order")
    log(chats.TINY_RERANK, "reloaded: scores " + ", ".join(f"{score:.3f}" for score in scores))


def make_checked_tiny_rerank(folder: Path) -> None:
    """Build, then prove the files on disk rank as trained."""
    make_tiny_rerank(folder)
    check_tiny_rerank(folder)
