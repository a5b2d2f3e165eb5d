"""LangChain's standard integration tests (langchain-tests: ChatModelIntegrationTests and
EmbeddingsIntegrationTests) run against an OpenAI endpoint, test by test, in their own env.

`run_suite` writes a small test module that points ChatOpenAI and OpenAIEmbeddings at the given URLs, runs
it with the env's pytest (asyncio_mode=auto, as the suite wants) and returns each test's outcome from the
JUnit report. The same settings go to every run, so two runs differ only by the endpoint.
"""

from __future__ import annotations

import subprocess
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

MODULE = '''
import os

from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from langchain_tests.integration_tests import ChatModelIntegrationTests, EmbeddingsIntegrationTests


class TestChat(ChatModelIntegrationTests):
    @property
    def chat_model_class(self):
        return ChatOpenAI

    @property
    def chat_model_params(self):
        return {"base_url": os.environ["SUITE_CHAT_URL"], "api_key": os.environ["SUITE_KEY"], "model": "tiny-chat",
                "temperature": 0, "max_tokens": int(os.environ["SUITE_MAX_TOKENS"]), "max_retries": 0, "timeout": 120}


class TestEmbeddings(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self):
        return OpenAIEmbeddings

    @property
    def embedding_model_params(self):
        return {"base_url": os.environ["SUITE_EMBED_URL"], "api_key": os.environ["SUITE_KEY"], "model": "minilm",
                "check_embedding_ctx_length": False, "max_retries": 0}
'''
# tiny-chat answers anything but its fixed prompts with nonsense until max_tokens: keep it short so that a
# test asking for a long answer costs seconds, not minutes (the same for both endpoints).
MAX_TOKENS = 48


@dataclass
class SuiteRun:
    outcomes: dict[str, str]        # test id -> passed | failed | skipped | error
    elapsed_s: float
    output: str

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for outcome in self.outcomes.values():
            found[outcome] = found.get(outcome, 0) + 1
        return found


def outcomes_of(report: Path) -> dict[str, str]:
    """Test id -> outcome, from a JUnit XML report."""
    found = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        kinds = {child.tag for child in case}
        found[name] = ("failed" if "failure" in kinds else "error" if "error" in kinds
                       else "skipped" if "skipped" in kinds else "passed")
    return found


def run_suite(python: str, folder: Path, chat_url: str, embed_url: str, key: str, timeout_s: float = 600) -> SuiteRun:
    """The standard tests against `chat_url` (tiny-chat) and `embed_url` (minilm), both OpenAI `/v1` bases."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test_standard.py").write_text(MODULE, encoding="utf-8")
    report = folder / "report.xml"
    environment = {"SUITE_CHAT_URL": chat_url, "SUITE_EMBED_URL": embed_url, "SUITE_KEY": key,
                   "SUITE_MAX_TOKENS": str(MAX_TOKENS), "PATH": "/usr/bin:/bin", "HOME": str(folder),
                   "LANGCHAIN_TRACING_V2": "false"}
    started = time.monotonic()
    result = subprocess.run([python, "-m", "pytest", "test_standard.py", "-q", "-p", "no:cacheprovider",
                             "-o", "asyncio_mode=auto", "--timeout", "180", f"--junitxml={report}"],
                            cwd=folder, env=environment, capture_output=True, text=True, timeout=timeout_s,
                            stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - started
    if not report.exists():
        raise AssertionError(f"langchain-tests did not run (exit {result.returncode}):\n{result.stdout[-3000:]}"
                             f"\n{result.stderr[-3000:]}")
    return SuiteRun(outcomes_of(report), elapsed, result.stdout)
