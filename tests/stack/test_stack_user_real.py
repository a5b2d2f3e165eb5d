"""A stack that runs as a user of its own: `install --systemd` creates the user (real useradd) and writes
the unit, `up` as root starts supervisord, which drops to that user with every program; logs, events and
the program files are not world-readable. baremetal runs from a venv of the host's /usr/bin/python3 (the
test's own interpreter lives under /root, which another user cannot reach)."""

from __future__ import annotations

import os
import random
import subprocess

import psutil
import pytest

from tests.support.engine_envs import REPO, ensure_env
from tests.support.lifecycle import SERVER, force_down
from tests.support.ports import free_ports
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0, reason="running a stack as another user needs root")]


@pytest.fixture
def account():
    name = f"bmtest{random.randint(10000, 99999)}"
    yield name
    subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(["groupdel", name], capture_output=True)


def test_the_stack_runs_as_its_own_user_and_keeps_its_files_to_itself(short_tmp, account):
    python = str(ensure_env("system-python") / "bin" / "python")
    environment = dict(os.environ, PYTHONPATH=str(REPO))

    def baremetal(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([python, "-m", "baremetal", *args, "-c", str(config)], env=environment,
                              capture_output=True, text=True, timeout=180)

    web_port, metrics_port = free_ports(2)
    config = short_tmp / "baremetal.toml"
    config.write_text(f'''
[stack]
name = "own"
root = "state"
user = "{account}"
[api]
kind = "none"
[watchdog]
metrics_port = {metrics_port}
[[program]]
name = "web"
command = ["{python}", "{SERVER}", "--port", "{web_port}"]
health = "http://127.0.0.1:{web_port}/health"
''')
    units = short_tmp / "units"
    os.chmod(short_tmp, 0o700)                   # the user cannot even reach the stack file yet
    refused = baremetal("install", "--systemd", "--unit-dir", str(units))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "Created the stack's user: useradd --system" in refused.stdout
    assert f"[stack] user = '{account}' cannot reach" in refused.stderr and f"the stack file {config}" in refused.stderr
    os.chmod(short_tmp, 0o755)
    installed = baremetal("install", "--systemd", "--unit-dir", str(units))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    unit = (units / "baremetal-own.service").read_text()
    assert f"User={account}" in unit and "ProtectSystem=strict" in unit
    root = short_tmp / "state"
    try:
        up = baremetal("up", "--timeout", "60s")
        assert up.returncode == 0, up.stdout + up.stderr
        uid = psutil.Process(int((root / "run" / "supervisord.pid").read_text())).uids().real
        assert uid != 0 and uid == __import__("pwd").getpwnam(account).pw_uid
        members = psutil.Process(int((root / "run" / "supervisord.pid").read_text())).children(recursive=True)
        assert members and {member.uids().real for member in members} == {uid}      # web and the watchdog
        events = root / "logs" / "events.jsonl"
        wait_for(events.exists, 20, what="the watchdog's first event")
        for path in (root / "logs" / "web.log", root / "logs" / "supervisord.log", events):
            info = path.stat()
            assert (info.st_uid, info.st_mode & 0o777) == (uid, 0o640), path
        conf = (root / "supervisor" / "conf.d" / "web.conf").stat()
        assert (conf.st_uid, conf.st_gid, conf.st_mode & 0o777) == (0, __import__("grp").getgrnam(account).gr_gid,
                                                                     0o640)
        assert (root / "run").stat().st_uid == uid and (root / "run").stat().st_mode & 0o777 == 0o700
        status = baremetal("status")
        assert status.returncode == 0, status.stdout + status.stderr
        down = baremetal("down")
        assert down.returncode == 0 and not members[0].is_running(), down.stdout + down.stderr
    finally:
        force_down(root)
