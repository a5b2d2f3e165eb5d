"""Fixtures shared with the demo-model tests: real engine envs and the demo models, built once per cache."""

from tests.demo.conftest import demo_models, fastchat_python, module_tmp, vllm_python  # noqa: F401
