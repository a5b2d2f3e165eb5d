"""Fixtures shared with the demo-model tests (the engine envs and demo models come from tests/conftest.py)."""

from tests.demo.conftest import module_tmp  # noqa: F401
