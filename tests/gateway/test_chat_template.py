"""Finding and reading a model's chat template in its folder, as transformers saves them."""

from __future__ import annotations

import json

from baremetal.gateway.chat_template import TemplateRenderer, load_model_template
from tests.gateway.templates import CHATML, HERMES


def folder(tmp, files: dict):
    for name, content in files.items():
        (tmp / name).write_text(content if isinstance(content, str) else json.dumps(content))
    return tmp


def test_tokenizer_config_string_template_with_tokens_and_stop_ids(tmp_path):
    model = folder(tmp_path, {
        "tokenizer_config.json": {"chat_template": HERMES, "eos_token": {"content": "<|im_end|>", "special": True},
                                  "pad_token": "<|endoftext|>", "bos_token": None,
                                  "added_tokens_decoder": {"151643": {"content": "<|endoftext|>"},
                                                           "151645": {"content": "<|im_end|>"}}},
        "generation_config.json": {"eos_token_id": [151645, 151643]}})
    template = load_model_template(model)
    assert template.default == HERMES and template.hermes_tools
    assert template.special_tokens == {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    assert template.stop_token_ids == (151645, 151643)
    assert template.origin == str(model / "tokenizer_config.json")


def test_named_templates_pick_tool_use_for_tools(tmp_path):
    model = folder(tmp_path, {"tokenizer_config.json": {"chat_template": [
        {"name": "default", "template": CHATML}, {"name": "tool_use", "template": HERMES}]}})
    template = load_model_template(model)
    renderer = TemplateRenderer(template, "m")
    messages = [{"role": "user", "content": "hi"}]
    tool = {"type": "function", "function": {"name": "f"}}
    assert "<tools>" in renderer.render(messages, [tool])
    assert renderer.render(messages, None) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_chat_template_jinja_file_wins(tmp_path):
    model = folder(tmp_path, {"chat_template.jinja": CHATML, "tokenizer_config.json": {"chat_template": HERMES}})
    template = load_model_template(model)
    assert template.default == CHATML and not template.hermes_tools
    assert template.origin.endswith("chat_template.jinja")


def test_processor_chat_template_json(tmp_path):
    model = folder(tmp_path, {"chat_template.json": {"chat_template": CHATML}})
    assert load_model_template(model).default == CHATML


def test_bos_added_by_the_tokenizer(tmp_path):
    model = folder(tmp_path, {"tokenizer_config.json": {"chat_template": "{{ bos_token }}x", "bos_token": "<s>",
                                                        "add_bos_token": True}})
    template = load_model_template(model)
    assert template.strip_bos and TemplateRenderer(template, "m").render([], None) == "x"


def test_no_template(tmp_path):
    assert load_model_template(folder(tmp_path, {"tokenizer_config.json": {"eos_token": "</s>"}})) is None
    assert load_model_template(tmp_path / "missing") is None
    (tmp_path / "broken").mkdir()
    assert load_model_template(folder(tmp_path / "broken", {"tokenizer_config.json": "{ nope"})) is None


def test_generation_tag_and_strftime(tmp_path):
    source = "{% generation %}{{ messages[0].content }}{% endgeneration %}|{{ strftime_now('%Y') | length }}"
    model = folder(tmp_path, {"tokenizer_config.json": {"chat_template": source}})
    assert TemplateRenderer(load_model_template(model), "m").render([{"role": "user", "content": "hi"}], None) == "hi|4"
