"""/v1/models entries merged across replicas from what each backend said, and /version."""

from __future__ import annotations

from baremetal.gateway.models import common_version, merged_entry

VLLM = {"id": "tiny-chat", "object": "model", "created": 1796121989, "owned_by": "vllm", "parent": None,
        "root": "/models/tiny-chat", "max_model_len": 2048,
        "permission": [{"id": "modelperm-862af3bd", "object": "model_permission", "allow_sampling": True}]}
FALLBACK = {"created": 1700000000, "owned_by": "baremetal", "root": "tiny-chat", "parent": None}


def test_the_backends_own_fields_merged_across_replicas():
    entry = merged_entry("tiny-chat", [VLLM, VLLM | {"max_model_len": 1024, "created": 1796121000}, {}], FALLBACK)
    assert entry == VLLM | {"max_model_len": 1024, "created": 1796121000}


def test_a_backend_that_did_not_answer_leaves_the_stacks_facts():
    entry = merged_entry("tiny-chat", [{}], FALLBACK | {"root": "/models/tiny-chat", "max_model_len": 4096})
    assert {k: entry[k] for k in ("id", "object", "owned_by", "root", "max_model_len", "created")} == {
        "id": "tiny-chat", "object": "model", "owned_by": "baremetal", "root": "/models/tiny-chat",
        "max_model_len": 4096, "created": 1700000000}
    assert entry["permission"][0]["object"] == "model_permission"
    fastchat = merged_entry("fc", [{"owned_by": "fastchat", "max_model_len": 2048}], FALLBACK | {"root": "/m/fc"})
    assert (fastchat["owned_by"], fastchat["max_model_len"], fastchat["root"]) == ("fastchat", 2048, "/m/fc")


def test_version():
    assert common_version({"vllm-a": "0.32.0", "vllm-b": "0.32.0", "vllm-c": None}, "0.1.0") == "0.32.0"
    assert common_version({"vllm-a": "0.32.0", "vllm-b": "0.26.0"}, "0.1.0") == "0.1.0"
    assert common_version({}, "0.1.0") == "0.1.0"
