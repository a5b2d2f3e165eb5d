"""LangChain's standard test suite (langchain-tests 1.1.9: ChatModelIntegrationTests, EmbeddingsIntegrationTests)
through the gateway in front of the demo stack, and directly against its vLLM servers: test by test, the
gateway changes no outcome (the failures are the 1 MB tiny-chat's)."""

from __future__ import annotations

from tests.support.demo_stack import record
from tests.support.engine_envs import ensure_env
from tests.support.langchain_suite import run_suite


def test_the_gateway_changes_no_outcome_of_langchains_standard_tests(demo_stack, tmp_path):
    python = str(ensure_env("langchain-tests") / "bin" / "python")
    through = run_suite(python, tmp_path / "gateway", demo_stack.gateway_url + "/v1", demo_stack.gateway_url + "/v1",
                        demo_stack.key)
    direct = run_suite(python, tmp_path / "direct", demo_stack.engine_url("tiny-chat") + "/v1",
                       demo_stack.engine_url("minilm") + "/v1", "unused")
    record("langchain-standard-tests", {"gateway": through.counts(), "direct": direct.counts(),
                                        "gateway_s": round(through.elapsed_s, 1), "direct_s": round(direct.elapsed_s, 1)})
    assert len(through.outcomes) > 40 and through.counts().get("passed", 0) > 10, through.output[-3000:]
    differing = {test: (through.outcomes.get(test), direct.outcomes.get(test))
                 for test in set(through.outcomes) | set(direct.outcomes)
                 if through.outcomes.get(test) != direct.outcomes.get(test)}
    assert differing == {}
