"""A stack's root belongs to its stack: another stack file with the same root, or `render --out` into its
folder, is refused with a message naming both, and the first stack's files stay exactly as they were."""

from __future__ import annotations

import json

import pytest

from tests.support.lifecycle import program_toml, run, stack_toml


@pytest.fixture
def first(write_stack):
    """Stack "one" rendered into state/; its files as bytes."""
    path = write_stack(stack_toml("one", [program_toml("web", ["sleep", "60"])]), "one.toml")
    assert run("render", "-c", str(path)).exit_code == 0
    return path


def snapshot(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_second_stack_on_the_same_root_is_refused(first, write_stack, short_tmp):
    before = snapshot(short_tmp / "state")
    marker = json.loads((short_tmp / "state" / ".baremetal-stack.json").read_text())
    assert marker == {"stack": "one", "file": str(first)}
    second = write_stack(stack_toml("two", [program_toml("other", ["sleep", "60"])]), "two.toml")
    for command in (["render"], ["up", "--no-wait"], ["down"], ["stop", "web"], ["status"], ["validate"]):
        result = run(*command, "-c", str(second))
        if command == ["validate"]:
            assert result.exit_code == 0       # validate touches nothing: it only reads the stack file
            continue
        assert result.exit_code == 2, (command, result.output)
        assert f"is the root of stack 'one' ({first})" in result.output
        assert f"stack 'two' ({second}) would overwrite its program files" in result.output
    assert snapshot(short_tmp / "state") == before


@pytest.mark.parametrize("out", ["state/supervisor", "state/review", "state"])
def test_render_out_into_another_stacks_folder_is_refused(first, write_stack, short_tmp, out):
    before = snapshot(short_tmp / "state")
    second = write_stack(stack_toml("two", [program_toml("other", ["sleep", "60"])], root="elsewhere"), "two.toml")
    result = run("render", "--out", str(short_tmp / out), "-c", str(second))
    assert result.exit_code == 2 and "holds the files of stack 'one'" in result.output
    assert snapshot(short_tmp / "state") == before
    assert run("render", "--out", str(short_tmp / "review"), "-c", str(second)).exit_code == 0


def test_a_root_from_before_the_marker_is_known_by_its_files(first, write_stack, short_tmp):
    (short_tmp / "state" / ".baremetal-stack.json").unlink()
    second = write_stack(stack_toml("two", [program_toml("other", ["sleep", "60"])]), "two.toml")
    result = run("render", "-c", str(second))
    assert result.exit_code == 2 and f"is the root of stack 'one' ({first})" in result.output


def test_the_same_file_renamed_stack_or_a_moved_file_keeps_its_root(first, write_stack, short_tmp):
    renamed = first.read_text().replace('name = "one"', 'name = "uno"')
    first.write_text(renamed)
    assert run("render", "-c", str(first)).exit_code == 0
    moved = short_tmp / "moved.toml"
    first.rename(moved)
    assert run("render", "-c", str(moved)).exit_code == 0
    marker = json.loads((short_tmp / "state" / ".baremetal-stack.json").read_text())
    assert marker == {"stack": "uno", "file": str(moved)}
