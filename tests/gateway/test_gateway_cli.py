"""`baremetal gateway` refuses to start without its keys, with a message and no traceback."""

from __future__ import annotations

from click.testing import CliRunner

from baremetal.cli import cli


def test_missing_key_variable_stops_the_gateway_with_a_message(write_stack, monkeypatch):
    monkeypatch.delenv("GATEWAY_TEST_UNSET_KEY", raising=False)
    stack = write_stack('''
        [stack]
        name = "k"
        [api]
        api_keys = ["env:GATEWAY_TEST_UNSET_KEY"]
        [watchdog]
        enabled = false
    ''')
    result = CliRunner().invoke(cli, ["gateway", "-c", str(stack)])
    assert result.exit_code == 1
    assert "GATEWAY_TEST_UNSET_KEY is unset or empty" in result.output and "Traceback" not in result.output
