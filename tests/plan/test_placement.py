"""Re-placement of programs pinned to cordoned GPUs onto [stack] spare_gpus: the pure rule as a table, and
the rendered files (the new CUDA_VISIBLE_DEVICES read back through supervisord's own parser)."""

from __future__ import annotations

from pathlib import Path

import pytest
from supervisor.options import ServerOptions

from baremetal.config import parse_stack
from baremetal.plan.placement import Placement, place
from baremetal.plan.plan import plan
from baremetal.plan.render import render
from baremetal.plan.write import prepare_root, write_rendered
from tests.plan.test_render import facts


@pytest.mark.parametrize("pinned,spares,cordoned,expected", [
    # nothing cordoned: every program keeps its GPUs
    ([("a", (0,)), ("b", (1,))], (2,), set(), {"a": (0,), "b": (1,)}),
    # a's GPU is cordoned: it moves onto the spare
    ([("a", (0,)), ("b", (1,))], (2,), {0}, {"a": (2,), "b": (1,)}),
    # tensor parallel over 0,1 with GPU 1 bad: only that rank's GPU is replaced
    ([("tp", (0, 1))], (2, 3), {1}, {"tp": (0, 2)}),
    # two programs sharing GPU 0 move together onto one spare
    ([("chat", (0,)), ("embed", (0,)), ("other", (1,))], (2,), {0}, {"chat": (2,), "embed": (2,), "other": (1,)}),
    # a spare that another program pins is not free: the next one is used
    ([("a", (0,)), ("b", (2,))], (2, 3), {0}, {"a": (3,), "b": (2,)}),
    # a cordoned spare is skipped
    ([("a", (0,))], (2, 3), {0, 2}, {"a": (3,)}),
    # unpinned and CPU programs are never moved
    ([("free", None), ("cpu", ())], (2,), {0}, {"free": None, "cpu": ()}),
])
def test_placement_table(pinned, spares, cordoned, expected):
    placements = place(pinned, spares, frozenset(cordoned))
    assert {name: p.gpus for name, p in placements.items()} == expected
    assert not any(p.blocked for p in placements.values())


def test_blocked_when_no_spare_is_free_says_why():
    placements = place([("a", (0,)), ("b", (1,)), ("c", (3,))], (1, 2, 3), frozenset({0, 2}))
    blocked = placements["a"]
    assert blocked.gpus == (0,) and blocked.blocked
    assert "GPU 0 is cordoned" in blocked.blocked
    assert "1 in use" in blocked.blocked and "2 cordoned" in blocked.blocked and "3 in use" in blocked.blocked
    assert "baremetal uncordon 0" in blocked.blocked
    assert placements["b"] == Placement((1,)) and placements["c"] == Placement((3,))


def test_no_spares_configured():
    blocked = place([("a", (0, 1))], (), frozenset({0, 1}))["a"].blocked
    assert "GPUs 0, 1 are cordoned and no [stack] spare_gpus" in blocked


def test_two_groups_compete_for_one_spare_first_in_plan_order_wins():
    placements = place([("a", (0,)), ("b", (1,))], (2,), frozenset({0, 1}))
    assert placements["a"].gpus == (2,) and placements["a"].moved == ((0, 2),)
    assert placements["b"].blocked and "taken by another moved program" in placements["b"].blocked


STACK = '''
[stack]
name = "cordon"
root = "{root}"
spare_gpus = [3]
[env.default]
kind = "system"
python = "/usr/bin/python3"
[[model]]
name = "chat"
path = "/models/chat"
gpus = [0, 1]
[[model]]
name = "embed"
path = "/models/embed"
task = "embed"
gpus = [2]
[[program]]
name = "tei"
command = ["/usr/bin/tei", "--port", "8090"]
gpus = [2]
'''


def supervisor_environment(root: Path, program: str, cordoned: set[int]) -> tuple[dict, dict]:
    stack = parse_stack(STACK.format(root=root), root / "baremetal.toml")
    host = facts()
    host = type(host)(**{**host.__dict__, "cordoned": frozenset(cordoned)})
    specs = plan(stack, host)
    prepare_root(root)
    write_rendered(render(stack, specs, host), stack.supervisor_dir)
    options = ServerOptions()
    options.realize(["-c", str(stack.supervisord_conf)])
    group = next(g for g in options.process_group_configs if g.name == program)
    config = group.process_configs[0]
    return config.environment or {}, {"autostart": config.autostart}


def test_rendered_files_move_the_program_to_the_spare(short_tmp):
    environment, _ = supervisor_environment(short_tmp, "vllm-chat", set())
    assert environment["CUDA_VISIBLE_DEVICES"] == "0,1"
    environment, settings = supervisor_environment(short_tmp, "vllm-chat", {1})
    assert environment["CUDA_VISIBLE_DEVICES"] == "0,3" and settings["autostart"] is True
    text = (short_tmp / "supervisor" / "conf.d" / "vllm-chat.conf").read_text()
    assert "moved off cordoned GPU(s) onto spare(s): 1 -> 3" in text


def test_a_program_with_no_spare_left_is_rendered_not_to_start(short_tmp):
    # GPU 2 (embed and tei) cordoned and the spare 3 taken by chat, moved off GPU 1: embed and tei are blocked
    environment, settings = supervisor_environment(short_tmp, "vllm-embed", {1, 2})
    assert settings["autostart"] is False and environment["CUDA_VISIBLE_DEVICES"] == "2"
    _, settings = supervisor_environment(short_tmp, "tei", {1, 2})
    assert settings["autostart"] is False
    chat, settings = supervisor_environment(short_tmp, "vllm-chat", {1, 2})
    assert chat["CUDA_VISIBLE_DEVICES"] == "0,3" and settings["autostart"] is True
