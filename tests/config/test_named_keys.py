"""[[api.key]]: named keys with model lists and limits, read into the stack, bad ones reported by field path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from baremetal.config import parse_stack
from baremetal.config.model import ApiKey
from baremetal.errors import ConfigError

FILE = Path("/srv/node/baremetal.toml")
MODELS = '''
[[model]]
name = "gpt-4"
path = "m/chat"
[[model]]
name = "bge-m3"
path = "m/embed"
task = "embed"
'''


def parse(body: str):
    return parse_stack('[stack]\nname = "t"\n' + textwrap.dedent(body) + MODELS, FILE)


def errors_of(body: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(body)
    return [f"{issue.path}: {issue.message}" for issue in caught.value.issues]


def test_named_keys_are_read_next_to_api_keys():
    stack = parse('''
        [api]
        api_keys = ["env:OPS_KEY"]
        [[api.key]]
        name = "team-a"
        key = "env:TEAM_A_KEY"
        models = ["gpt-4", "bge-m3"]
        requests_per_minute = 600
        tokens_per_minute = 200000
        max_concurrent = 16
        [[api.key]]
        name = "batch"
        key = "file:/etc/baremetal/batch-keys"
    ''')
    assert stack.api.named_keys == (
        ApiKey("team-a", "env:TEAM_A_KEY", ("gpt-4", "bge-m3"), 600, 200000, 16),
        ApiKey("batch", "file:/etc/baremetal/batch-keys"))
    assert stack.api.key_specs == ("env:OPS_KEY", "env:TEAM_A_KEY", "file:/etc/baremetal/batch-keys")
    assert stack.api.workers == 1


def test_every_problem_is_named_by_its_field():
    assert errors_of('''
        [api]
        api_keys = ["shared"]
        [[api.key]]
        name = "team a"
        key = "shared"
        models = ["gpt4"]
        requests_per_minute = 0
        [[api.key]]
        name = "b"
        key = ""
        max_concurent = 3
        [[api.key]]
        name = "b"
        models = []
    ''') == [
        "api.key[0].name: 'team a': a key name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
        "digit (it becomes a metrics label)",
        "api.key[0].requests_per_minute: must be at least 1, got 0",
        "api.key[1].max_concurent: unknown key; did you mean 'max_concurrent'?",
        "api.key[1].key: an empty key would let anyone in",
        "api.key[2].key: is required",
        "api.key[2].models: must not be empty",
        "api.key[2].name: 'b' is also the name of api.key[1]; each key needs its own name",
        "api.key[0].models[0]: 'gpt4' is not a model of this stack; did you mean 'gpt-4'?",
        "api.key[0].key: the same key is also given in api.api_keys: one key, one name (else its requests could "
        "not be told apart)",
    ]


def test_named_keys_need_the_gateway():
    assert errors_of('''
        [api]
        kind = "fastchat"
        [[api.key]]
        name = "a"
        key = "env:A"
    ''') == ['api.key: [[api.key]] needs api.kind = "gateway" (names, model lists and limits are the gateway\'s); '
             "FastChat's server (kind 'fastchat') takes only api_keys"]


def test_a_key_is_the_key_a_public_endpoint_needs():
    stack = parse('''
        [api]
        host = "0.0.0.0"
        [[api.key]]
        name = "a"
        key = "env:A"
    ''')
    assert [w.path for w in stack.warnings] == []
