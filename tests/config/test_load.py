"""Reading stack files: defaults filled in, stable ports, and bad files reported with exact field paths."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from baremetal.config import parse_stack
from baremetal.config.types import FieldError, duration_s
from baremetal.errors import ConfigError

FILE = Path("/srv/node/baremetal.toml")
HEAD = '[stack]\nname = "t"\n'


def parse(body: str):
    return parse_stack(HEAD + textwrap.dedent(body), FILE)


def errors_of(body: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(body)
    return [f"{issue.path}: {issue.message}" for issue in caught.value.issues]


def test_defaults_are_filled_in():
    stack = parse('''
        [[model]]
        name = "chat"
        path = "m/chat"
        gpus = [0, 1]
    ''')
    model = stack.models[0]
    assert stack.root == Path("/srv/node")
    assert model.path == Path("/srv/node/m/chat")          # no models_dir: relative to the stack file
    assert model.tensor_parallel == 2 and model.pipeline_parallel == 1
    assert model.program == "vllm-chat" and model.env == "default" and model.host == "127.0.0.1"
    assert 8001 <= model.port <= 8999
    assert stack.envs["default"].path == Path("/srv/node/envs/default")
    assert stack.api.kind == "gateway" and stack.api.port == 8000 and stack.api.host == "127.0.0.1"
    assert not stack.controller.enabled                       # no FastChat engine
    assert stack.watchdog.unhealthy_after == 3 and stack.watchdog.restart_window_s == 3600


def test_models_dir_and_fastchat_imply_controller_and_env():
    stack = parse_stack(HEAD + 'models_dir = "/data/models"\n[[model]]\nname = "q"\npath = "Qwen/Q"\nengine = "fastchat"\n', FILE)
    assert stack.models[0].path == Path("/data/models/Qwen/Q")
    assert stack.controller.enabled and stack.controller.port == 21001
    assert stack.models[0].env == "fastchat" and stack.envs["fastchat"].path == Path("/srv/node/envs/fastchat")


def test_assigned_ports_do_not_move_when_a_model_is_added():
    one = parse('[[model]]\nname = "a"\npath = "/m/a"\n[[model]]\nname = "b"\npath = "/m/b"\n')
    two = parse('[[model]]\nname = "new"\npath = "/m/n"\n[[model]]\nname = "a"\npath = "/m/a"\n'
                '[[model]]\nname = "b"\npath = "/m/b"\n')
    ports_one = {m.name: m.port for m in one.models}
    ports_two = {m.name: m.port for m in two.models}
    assert ports_two["a"] == ports_one["a"] and ports_two["b"] == ports_one["b"]
    assert len(set(ports_two.values())) == 3


def test_assigned_ports_avoid_explicit_ones():
    stack = parse('[[model]]\nname = "a"\npath = "/m/a"\n')
    taken = stack.models[0].port
    again = parse(f'[[model]]\nname = "a"\npath = "/m/a"\n[[model]]\nname = "b"\npath = "/m/b"\nport = {taken}\n')
    assert again.models[0].port != taken and again.models[1].port == taken


def test_replicas_need_distinct_program_names():
    stack = parse('''
        [[model]]
        name = "chat"
        path = "/m/a"
        program = "chat-a"
        gpus = [0]
        [[model]]
        name = "chat"
        path = "/m/a"
        program = "chat-b"
        gpus = [1]
    ''')
    assert [m.program for m in stack.models] == ["chat-a", "chat-b"]


@pytest.mark.parametrize("text,seconds", [("500ms", 0.5), ("2s", 2), ("5m", 300), ("1h", 3600), ("1h30m", 5400),
                                          ("90", 90), ("1.5", 1.5), (90, 90), (0.25, 0.25), ("365d", 365 * 86400)])
def test_durations(text, seconds):
    """Units, or a bare number of seconds (as `timeout 90` and systemd read it), in a string or as a number."""
    assert duration_s(text) == seconds


@pytest.mark.parametrize("value", ["", "2 parsecs", "1h-5m", "-5", -3, float("inf"), float("nan"), "366d", True,
                                   "1e3", "5 s s"])
def test_bad_durations(value):
    with pytest.raises(FieldError):
        duration_s(value)


# (stack body, expected "path: message" fragments). Each file is bad in one or more ways; every
# problem must be reported at once, with its exact field path.
BAD = [
    ('[[model]]\nname = "a"\npath = "/m"\ntensor_paralel = 2\n',
     ["model[0].tensor_paralel: unknown key; did you mean 'tensor_parallel'?"]),
    ('[[model]]\nname = "a"\npath = "/m"\ngpus = [0, 1]\ntensor_parallel = 4\n',
     ["model[0].tensor_parallel: tensor_parallel (4) x pipeline_parallel (1) = 4, but gpus lists 2 GPUs"]),
    ('[[model]]\nname = "a"\npath = "/m"\ngpus = [0, -1]\n', ["model[0].gpus: GPU indices are 0 or more, got -1"]),
    ('[[model]]\nname = "a"\npath = "/m"\ngpus = [1, 1]\n', ["model[0].gpus: GPU 1 is listed twice"]),
    ('[[model]]\nname = "a"\npath = "/m"\ngpus = "0,1"\n', ["model[0].gpus: expected an array of GPU indices"]),
    ('[[model]]\nname = "a"\npath = "/m"\n[[model]]\nname = "a"\npath = "/n"\n',
     ["model[1].name: 'a' is already the name of model[0]"]),
    ('[[model]]\nname = "a"\npath = "/m"\nport = 8000\n', ["model[0].port: port 8000 is already taken by api.port"]),
    ('[[model]]\nname = "a"\npath = "/m"\nport = 9400\n',
     ["model[0].port: port 9400 is already taken by watchdog.metrics_port"]),
    ('[[program]]\nname = "x"\ncommand = ["x"]\nhealth = "http://127.0.0.1:8000/health"\n',
     ["program[0].port: port 8000 is already taken by api.port"]),
    ('[[model]]\nname = "e"\npath = "/m"\ntask = "embed"\ntool_call_parser = "hermes"\n',
     ["model[0].tool_call_parser: makes no sense for a model with task = 'embed'"]),
    ('[[model]]\nname = "e"\npath = "/m"\nengine = "fastchat"\nprefix_caching = true\n',
     ["model[0].prefix_caching: only vLLM engines use prefix_caching"]),
    ('[[model]]\nname = "r"\npath = "/m"\nengine = "fastchat"\ntask = "rerank"\n',
     ["model[0].task: FastChat workers cannot rerank"]),
    ('[[model]]\nname = "a"\npath = "/m"\ngpus = []\ndistributed_backend = "ray"\n',
     ["model[0].distributed_backend: vLLM's CPU backend cannot use ray"]),
    ('[[model]]\nname = "a"\npath = "/m"\ngpus = [0]\n[[model]]\nname = "b"\npath = "/n"\ngpus = [0]\n',
     ["model[1].gpu_memory_utilization: models on GPU 0 ask for 0.9 (a, default) + 0.9 (b, default) = 1.8"]),
    ('[watchdog]\ninterval = "0.0001ms"\n', ["watchdog.interval: must be at least 50ms, got '0.0001ms'"]),
    ('[watchdog]\nprobe_timeout = 0\n', ["watchdog.probe_timeout: must be at least 100ms, got 0"]),
    ('[watchdog]\nrestart_window = "10s"\n', ["watchdog.restart_window: must be at least 1m"]),
    ('[watchdog]\nstall_after = inf\n', ["watchdog.stall_after: expected a duration"]),
    ('[watchdog]\nstall_after = "soon"\n', ["watchdog.stall_after: expected a duration"]),
    ('[api]\nkind = "openai"\n', ["api.kind: expected one of 'gateway', 'fastchat', 'fastchat-tools', 'none'"]),
    ('[api]\nport = 70000\n', ["api.port: must be at most 65535, got 70000"]),
    ('[api]\napi_keys = ["env:"]\n', ["api.api_keys[0]: env: needs a name after it"]),
    ('[api]\nhold_timeout = "long"\n', ["api.hold_timeout: expected a duration"]),
    ('[api]\nmigration_limit = -1\n', ["api.migration_limit: must be at least 0, got -1"]),
    ('[env.gpu]\nkind = "docker"\n', ["env.gpu.kind: expected one of 'venv', 'conda', 'system'"]),
    ('[env.sys]\nkind = "system"\npath = "envs/x"\n', ['env.sys.path: kind "system" uses an existing interpreter']),
    ('[[model]]\nname = "a"\npath = "/m"\nenv = "gpu"\n', ["model[0].env: no [env.gpu] in this file"]),
    ('[[model]]\nname = "a"\n', ["model[0].path: is required"]),
    ('[[model]]\nname = "a"\npath = "/m"\nenvironment = { X = "it\'s \\"quoted\\"" }\n',
     ["model[0].environment: X: supervisord cannot pass a value holding both"]),
    ('[[program]]\nname = "x"\ncommand = "sleep 1"\n', ["program[0].command: give the command as an array"]),
    ('[[program]]\nname = "api"\ncommand = ["x"]\n', ["program[0].name: 'api' is already used by the built-in api"]),
    ('[[model]]\nname = "watchdog"\npath = "/m"\nprogram = "watchdog"\n',
     ["model[0].program: program name 'watchdog' is already used by the built-in watchdog program"]),
    ('[stack]\n', ["TOML syntax error: Cannot declare ('stack',) twice"]),
]


@pytest.mark.parametrize("body,expected", BAD, ids=[e[0] for _, e in BAD])
def test_bad_stack_files_name_the_field(body, expected):
    found = errors_of(body)
    for fragment in expected:
        assert any(fragment in error for error in found), f"{fragment!r} not in {found}"


def test_every_error_at_once_with_line_numbers():
    text = textwrap.dedent('''\
        [stack]
        name = "t"

        [[model]]
        name = "a"
        path = "/m"
        gpus = [0, 0]

        [[model]]
        name = "b"
        path = "/n"
        engine = "vllmm"
        port = "8001"
    ''')
    with pytest.raises(ConfigError) as caught:
        parse_stack(text, FILE)
    by_path = {issue.path: issue for issue in caught.value.issues}
    assert set(by_path) == {"model[0].gpus", "model[1].engine", "model[1].port"}
    assert by_path["model[0].gpus"].line == 7
    assert by_path["model[1].engine"].line == 12
    assert "/srv/node/baremetal.toml:13: model[1].port: expected an integer" in str(caught.value)


def test_toml_syntax_error_has_the_line():
    with pytest.raises(ConfigError) as caught:
        parse_stack('[stack]\nname = "t"\n\n[[model]\nname = "a"\n', FILE)
    assert caught.value.issues[0].line == 4
    assert "TOML syntax error" in str(caught.value)


def test_missing_stack_table():
    with pytest.raises(ConfigError) as caught:
        parse_stack('[[model]]\nname = "a"\npath = "/m"\n', FILE)
    assert "stack: is required" in str(caught.value)


def test_long_root_is_refused_because_of_the_socket_limit():
    with pytest.raises(ConfigError) as caught:
        parse_stack(HEAD + f'root = "/{"x" * 120}"\n', FILE)
    assert "stack.root: the supervisord socket" in str(caught.value)


def test_fault_settings_of_the_gateway():
    assert (parse("").api.hold_timeout_s, parse("").api.migration_limit) == (120.0, 2)
    api = parse('[api]\nhold_timeout = "0s"\nmigration_limit = 0\n').api
    assert (api.hold_timeout_s, api.migration_limit) == (0.0, 0)       # off: a 503 at once, never re-sent


def test_open_api_without_keys_warns():
    stack = parse('[api]\nhost = "0.0.0.0"\n')
    assert any(w.path == "api.api_keys" for w in stack.warnings)


@pytest.mark.parametrize("path, warned", [("/m/all-MiniLM-L6-v2", True), ("/m/BAAI/bge-large-zh", False),
                                          ("/m/intfloat/e5-large-v2", False)])
def test_fastchat_embedding_model_that_fastchat_would_load_as_a_language_model_warns(path, warned):
    stack = parse(f'[[model]]\nname = "e"\npath = "{path}"\nengine = "fastchat"\ntask = "embed"\n')
    assert any(w.path == "model[0].path" and "bge" in w.message for w in stack.warnings) == warned


def test_planned_changes_and_the_idle_canary_have_their_own_keys():
    defaults = parse("")
    assert defaults.api.drain_timeout_s == 30.0 and defaults.watchdog.idle_probe_interval_s == 30.0
    chosen = parse('[api]\ndrain_timeout = "0s"\n[watchdog]\nidle_probe_interval = "2m"\n')
    assert chosen.api.drain_timeout_s == 0.0 and chosen.watchdog.idle_probe_interval_s == 120.0
    assert errors_of('[watchdog]\nidle_probe_interval = "0s"\n') == ["watchdog.idle_probe_interval: must be at least 1s, got '0s'"]
    assert errors_of('[api]\ndrain_timeout = "soon"\n')[0].startswith("api.drain_timeout: expected a duration")
