"""The keys for hangs and bad GPUs: [watchdog] start_stall_after, gpu_reset, evidence_keep; [stack] spare_gpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from baremetal.config import parse_stack
from baremetal.errors import ConfigError

FILE = Path("/srv/node/baremetal.toml")


def test_defaults():
    stack = parse_stack('[stack]\nname = "t"\n', FILE)
    assert stack.watchdog.start_stall_after_s == 300.0 and stack.watchdog.gpu_reset is False
    assert stack.watchdog.evidence_keep == 20 and stack.stack.spare_gpus == ()


def test_set():
    stack = parse_stack('[stack]\nname = "t"\nspare_gpus = [6, 7]\n[watchdog]\nstart_stall_after = "90s"\n'
                        'gpu_reset = true\nevidence_keep = 3\n', FILE)
    assert stack.stack.spare_gpus == (6, 7) and stack.watchdog.start_stall_after_s == 90.0
    assert stack.watchdog.gpu_reset is True and stack.watchdog.evidence_keep == 3


@pytest.mark.parametrize("body,path", [
    ('[stack]\nname = "t"\nspare_gpus = [1, 1]\n', "stack.spare_gpus"),
    ('[stack]\nname = "t"\nspare_gpus = "2"\n', "stack.spare_gpus"),
    ('[stack]\nname = "t"\n[watchdog]\nstart_stall_after = "0s"\n', "watchdog.start_stall_after"),
    ('[stack]\nname = "t"\n[watchdog]\nevidence_keep = 0\n', "watchdog.evidence_keep"),
    ('[stack]\nname = "t"\n[watchdog]\ngpu_reset = "yes"\n', "watchdog.gpu_reset"),
])
def test_bad_values_name_the_field(body, path):
    with pytest.raises(ConfigError) as caught:
        parse_stack(body, FILE)
    assert [issue.path for issue in caught.value.issues] == [path]
