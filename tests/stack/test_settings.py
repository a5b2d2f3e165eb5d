"""What counts as a change of the settings the gateway and the watchdog read at run time."""

from __future__ import annotations

from baremetal.config import load_stack
from baremetal.plan.pipeline import known_specs
from baremetal.stack.refresh import expected_digests, settings_state
from baremetal.stack.settings import Published, digest_of, gateway_settings, watchdog_settings

BASE = '''
[stack]
name = "s"
[api]
port = {port}
api_keys = ["k1"]
{api}
[watchdog]
interval = "{interval}"
[[program]]
name = "web"
command = ["sleep", "1"]
health = "http://127.0.0.1:{web}/health"
serves = {{ model = "m", task = "chat", url = "http://127.0.0.1:{web}" }}
'''


def _digests(write_stack, keys=("k1",), port=8000, api="", interval="1s", web=8100):
    stack = load_stack(write_stack(BASE.format(port=port, api=api, interval=interval, web=web)))
    return expected_digests(stack, known_specs(stack), list(keys))


def test_what_changes_the_gateways_settings(write_stack):
    base = _digests(write_stack)
    assert _digests(write_stack) == base
    assert _digests(write_stack, keys=("k2",))["api"] != base["api"]                  # a rotated key
    assert _digests(write_stack, api='client_timeout = "3s"')["api"] != base["api"]   # a limit
    assert _digests(write_stack, web=8101)["api"] != base["api"]                      # a route
    assert _digests(write_stack, port=8001)["api"] == base["api"]     # on its command line: a restart, not this


def test_what_changes_the_watchdogs_settings(write_stack):
    base = _digests(write_stack)
    assert _digests(write_stack, keys=("k2",))["watchdog"] == base["watchdog"]
    assert _digests(write_stack, interval="2s")["watchdog"] != base["watchdog"]
    assert _digests(write_stack, web=8101)["watchdog"] != base["watchdog"]           # what it probes


def test_keys_are_only_hashed(write_stack):
    stack = load_stack(write_stack(BASE.format(port=8000, api="", interval="1s", web=8100)))
    described = str(gateway_settings(stack, ["secret-key-1"])) + str(watchdog_settings(stack, known_specs(stack)))
    assert "secret-key-1" not in described and "k1" not in described
    assert len(digest_of(gateway_settings(stack, ["secret-key-1"]))) == 64


def test_settings_state():
    record = Published(pid=10, digest="abc", loaded_s=1.0)
    assert settings_state("abc", record, 10) == "current"
    assert settings_state("def", record, 10) == "older"
    assert settings_state("abc", record, 11) == "unknown"          # another process wrote it
    assert settings_state("abc", None, 10) == "unknown"
    assert settings_state("abc", record, None) == ""


def test_status_knows_when_the_stack_file_changed_since_up(write_stack):
    from baremetal.stack.settings import changed_since_applied, record_applied

    path = write_stack(BASE.format(port=8000, api="", interval="1s", web=8100))
    stack = load_stack(path)
    assert not changed_since_applied(stack)                            # never applied: nothing to compare
    record_applied(stack)
    path.write_text("# a comment changes nothing\n" + path.read_text())
    assert not changed_since_applied(load_stack(path))
    path.write_text(path.read_text().replace('interval = "1s"', 'interval = "2s"'))
    assert changed_since_applied(load_stack(path))
