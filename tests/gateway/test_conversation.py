"""The gateway's rendering of FastChat conversation templates equals FastChat's own, for every template
FastChat 0.2.36 registers (run in the real FastChat env, as the worker would serve them)."""

from __future__ import annotations

import json
import subprocess

import pytest

from baremetal.gateway.conversation import Conversation
from tests.support.engine_envs import ensure_env

DIALOGUES = {
    "no system": (None, [(0, "Hello?"), (1, "Hi. How can I help?"), (0, "Weather in Paris?")]),
    "system": ("Be brief.", [(0, "Weather in Paris?")]),
    "multi-line": ("System\n\nrules", [(0, "a\n\nb"), (1, "c\r\nd"), (0, "e")]),
}

# Runs inside the FastChat env: every registered template, rendered by FastChat as its API server does.
SCRIPT = r"""
import json, sys
from fastapi.encoders import jsonable_encoder
from fastchat.conversation import conv_templates
dialogues = json.loads(sys.argv[1])
out = []
for name, template in sorted(conv_templates.items()):
    conv = template.copy()
    if conv.sep_style is None:      # a worker could not serve it either (it calls int() on it)
        continue
    conv.sep_style = int(conv.sep_style)
    served = jsonable_encoder({"conv": conv})["conv"]
    for label, (system, turns) in dialogues.items():
        conv = template.copy()
        conv.messages = list(conv.messages)
        if system is not None:
            conv.set_system_message(system)
        for role, text in turns:
            conv.append_message(conv.roles[role], text)
        conv.append_message(conv.roles[1], None)
        try:
            prompt = conv.get_prompt()
        except Exception as error:
            prompt = None
        out.append([name, label, served, prompt])
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def fastchat_renderings():
    python = ensure_env("fastchat") / "bin" / "python"
    result = subprocess.run([str(python), "-c", SCRIPT, json.dumps(DIALOGUES)], capture_output=True, text=True,
                            check=True, timeout=300)
    return json.loads(result.stdout)


@pytest.mark.e2e   # the real FastChat env
def test_every_fastchat_template_renders_as_fastchat_does(fastchat_renderings):
    compared = 0
    for name, label, served, expected in fastchat_renderings:
        if expected is None:
            continue        # FastChat itself cannot render it (image-only templates)
        system, turns = DIALOGUES[label]
        conversation = Conversation.from_json(served)
        assert conversation.with_turns(system, [tuple(t) for t in turns] + [(1, None)]).prompt() == expected, \
            (name, label)
        compared += 1
    assert compared > 100    # ~80 templates x 3 dialogues: the comparison really ran
