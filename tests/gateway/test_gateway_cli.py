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


def test_a_port_out_of_range_or_zero_is_refused_before_anything_starts(write_stack):
    stack = write_stack('[stack]\nname = "p"\n[watchdog]\nenabled = false\n')
    for port in ("70000", "0", "-1"):
        result = CliRunner().invoke(cli, ["gateway", "--port", port, "-c", str(stack)])
        assert result.exit_code == 2, (port, result.output)
        assert "--port" in result.output and "1<=x<=65535" in result.output and "Traceback" not in result.output
