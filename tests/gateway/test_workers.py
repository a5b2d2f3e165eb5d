"""Several gateway processes: their metrics pages summed into one, a dead worker's counters kept."""

from __future__ import annotations

from baremetal.gateway.workers import merge_pages, node_page, retire, without_gauges, worker_page

PAGE_A = '''# HELP baremetal_gateway_requests_total Requests answered by the gateway.
# TYPE baremetal_gateway_requests_total counter
baremetal_gateway_requests_total{model="m",backend="b",endpoint="chat",status="200"} 3
# HELP baremetal_gateway_in_flight Requests being served now.
# TYPE baremetal_gateway_in_flight gauge
baremetal_gateway_in_flight{model="m",backend="b"} 2
# HELP baremetal_gateway_request_duration_seconds Time to the last byte.
# TYPE baremetal_gateway_request_duration_seconds histogram
baremetal_gateway_request_duration_seconds_bucket{model="m",le="0.5"} 3
baremetal_gateway_request_duration_seconds_sum{model="m"} 0.75
'''
PAGE_B = '''# HELP baremetal_gateway_requests_total Requests answered by the gateway.
# TYPE baremetal_gateway_requests_total counter
baremetal_gateway_requests_total{model="m",backend="b",endpoint="chat",status="200"} 4
baremetal_gateway_requests_total{model="m",backend="b",endpoint="chat",status="429"} 1
# HELP baremetal_gateway_in_flight Requests being served now.
# TYPE baremetal_gateway_in_flight gauge
baremetal_gateway_in_flight{model="m",backend="b"} 1
'''


def test_pages_are_summed_sample_by_sample():
    lines = merge_pages([PAGE_A, PAGE_B]).splitlines()
    assert 'baremetal_gateway_requests_total{model="m",backend="b",endpoint="chat",status="200"} 7' in lines
    assert 'baremetal_gateway_requests_total{model="m",backend="b",endpoint="chat",status="429"} 1' in lines
    assert 'baremetal_gateway_in_flight{model="m",backend="b"} 3' in lines
    assert 'baremetal_gateway_request_duration_seconds_sum{model="m"} 0.75' in lines
    assert lines.count("# TYPE baremetal_gateway_requests_total counter") == 1


def test_a_dead_workers_counters_stay_and_its_gauges_go(tmp_path):
    worker_page(tmp_path, 1).write_text(PAGE_B)
    assert "in_flight" not in without_gauges(PAGE_B) and "status=\"429\"" in without_gauges(PAGE_B)
    retire(tmp_path, 1)
    assert not worker_page(tmp_path, 1).exists()
    lines = node_page(tmp_path, 0, PAGE_A).splitlines()
    assert 'baremetal_gateway_requests_total{model="m",backend="b",endpoint="chat",status="200"} 7' in lines
    assert 'baremetal_gateway_in_flight{model="m",backend="b"} 2' in lines


def test_the_number_of_workers_is_on_the_gateways_command_line(write_stack):
    """A change of api.workers changes the rendered program, so `up` restarts the gateway (SIGHUP cannot fork)."""
    from baremetal.config import load_stack
    from baremetal.plan.pipeline import known_specs

    def argv(workers: str) -> tuple[str, ...]:
        stack = load_stack(write_stack(f'[stack]\nname = "w"\nroot = "state"\n[api]\n{workers}\n'
                                       '[watchdog]\nenabled = false\n'))
        return next(spec.argv for spec in known_specs(stack) if spec.name == "api")

    assert "--workers" not in argv("")
    assert argv("workers = 4")[-2:] == ("--workers", "4")
