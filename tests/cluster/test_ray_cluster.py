"""A real two-node Ray cluster from one stack file: each host runs `baremetal up` under its own supervisord;
the cluster forms with token authentication; a node without the token is refused; a worker node that is
killed, frozen or unplugged is seen lost from the head in seconds and rejoins by itself when it can.

Times measured here are printed (pytest -s shows them) and bounded generously: the machine is shared.
"""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import pytest

from tests.support.cluster import RAY_DRIVER, ClusterRun, json_of, log_of, start_cluster, stop_cluster
from tests.support.waiting import wait_for

JOIN_S = 60          # both nodes alive after `up` (measured: 4-5 s)
LOST_S = 30          # Ray declares a silent node dead (measured: 5-7 s with lost_after = 6s)
BACK_S = 90          # a node that can come back is alive again


DRIVER_PORT = 8600
DRIVER = f'''
    [[program]]
    name = "ray-driver"
    command = ["{{python}}", "{RAY_DRIVER}", "--port", "{DRIVER_PORT}", "--gpus", "2"]
    health = "http://127.0.0.1:{DRIVER_PORT}/health"
    startsecs = 1
    ray_gpus = 2
'''
DRIVER_URL = f"http://127.0.0.1:{DRIVER_PORT}/health"


API_PORT = 8000
API_KEY = "cluster-test-key"
FASTCHAT_WORKER = '''
    [env.fastchat]
    kind = "system"
    python = "{python}"
    [[model]]
    name = "tiny-chat"
    path = "{model}"
    engine = "fastchat"
    env = "fastchat"
    node = "w1"
    gpus = []
    port = 21002
'''


@pytest.fixture(scope="module")
def cluster(hosts, ray_python, fastchat_python, chat_model):
    """Head up first (its Ray driver then waits for the second GPU), then w1; stale segments are planted
    in the head's /dev/shm before, for the driver's launcher to clean. w1 also runs a FastChat worker,
    registered with the head's controller, behind the head's API."""
    extra = DRIVER.replace("{python}", ray_python) + \
        FASTCHAT_WORKER.replace("{python}", fastchat_python).replace("{model}", str(chat_model))
    # A request for a model no node can serve is held for hold_timeout (kept short here), then answered 503.
    api = f'kind = "gateway"\nhost = "0.0.0.0"\nport = {API_PORT}\napi_keys = ["{API_KEY}"]\nhold_timeout = "5s"'
    run = start_cluster(hosts, ray_python, extra, nodes=(), api=api)
    try:
        shm = hosts.host("head").shm()
        stale, fresh = shm / "psm_deadbeef", shm / "psm_justmade"
        for path in (stale, fresh):
            path.write_bytes(b"\0" * 4096)
        os.utime(stale, (time.time() - 3600,) * 2)
        run.up("head")
        started = time.monotonic()
        run.up("w1")
        joined = run.wait_states({"head": "alive", "w1": "alive"}, JOIN_S)
        run.wait_ray_started("w1", 0)
        print(f"\ncluster formed {joined:.1f}s after `up` on w1")
        run.notes.update(segments=(stale, fresh), w1_up_at=started)
        yield run
    finally:
        stop_cluster(run)


def ray_status(run: ClusterRun, token_path: str | None) -> tuple[int, str]:
    """`ray status` against the head, from w1, with the cluster's token file (or another one)."""
    stack = run.stacks["w1"]
    environment = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token_path or str(stack.cluster.token_file),
                   "RAY_gcs_rpc_server_connect_timeout_s": "5", "PATH": os.environ["PATH"]}
    result = run.host("w1").run([stack.envs["ray"].interpreter, "-m", "ray.scripts.scripts", "status",
                                 "--address", stack.cluster.gcs_address], timeout_s=120, env=environment)
    return result.returncode, result.stdout + result.stderr


def test_cluster_forms_with_every_node(cluster):
    # `ray status` reads the autoscaler's report, which comes a few seconds after the GCS.
    seen = []

    def listed() -> bool:
        seen[:] = ray_status(cluster, None)
        return seen[0] == 0 and seen[1].count("node_") == 2
    wait_for(listed, 60, 1.0, "`ray status` listing both nodes")
    output = seen[1]
    assert "2.0 GPU" in output or "0.0/2.0 GPU" in output, output
    status = cluster.baremetal("head", "status", "--json")
    nodes = {node["name"]: node for node in json_of(status)["cluster"]["nodes"]}
    assert nodes["head"]["state"] == nodes["w1"]["state"] == "alive"
    assert nodes["w1"]["address"] == cluster.host("w1").address and nodes["w1"]["gpus_total"] == 1
    table = cluster.baremetal("head", "status").stdout
    assert "2/2 node(s) alive" in table, table


def test_a_program_on_ray_waits_for_the_gpus_then_spans_the_nodes(cluster):
    """The launcher held the driver until w1 brought the second GPU, after cleaning the stale segment."""
    code, body = wait_for(lambda: (lambda answer: answer if answer[0] == 200 else None)(
        cluster.get("head", DRIVER_URL)), 120, 0.5, "the Ray driver serving")
    print(f"\nthe Ray driver served {time.monotonic() - cluster.notes['w1_up_at']:.1f}s after `up` on w1")
    assert sorted(json.loads(body)["nodes"]) == sorted([cluster.host("head").address, cluster.host("w1").address])
    log = log_of(cluster, "head", "ray-driver")
    assert "waiting for 2 free GPU(s): the cluster has 1 on 1 node(s)" in log
    assert f"removed stale {cluster.notes['segments'][0]}".replace(str(cluster.host('head').shm()), "/dev/shm") in log
    stale, fresh = cluster.notes['segments']
    assert not stale.exists() and fresh.exists()         # too young to be anybody's leftover


def chat(run: ClusterRun, timeout_s: float = 60) -> httpx.Response:
    """A chat completion through the head's API, from outside the cluster (the test's own namespace)."""
    url = f"http://{run.host('head').address}:{API_PORT}/v1/chat/completions"
    return httpx.post(url, json={"model": "tiny-chat", "messages": [{"role": "user", "content": "Hello"}],
                                 "max_tokens": 8}, headers={"Authorization": f"Bearer {API_KEY}"},
                      timeout=timeout_s, trust_env=False)


def chat_outcome(run: ClusterRun, timeout_s: float = 20) -> str:
    """What a client gets from the head's API, and after how long."""
    started = time.monotonic()
    try:
        response = chat(run, timeout_s)
        what = f"{response.status_code} {response.text[:600]}"
    except httpx.HTTPError as error:
        what = f"{type(error).__name__}"
    return f"{what} after {time.monotonic() - started:.1f}s"


def chat_works(run: ClusterRun) -> bool:
    try:
        response = chat(run, 30)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and bool(response.json()["choices"][0]["message"]["content"])


def test_a_fastchat_worker_on_w1_serves_through_the_head(cluster):
    started = time.monotonic()
    wait_for(lambda: chat_works(cluster), 240, 1.0, "a chat through the head's API")
    print(f"\nchat through the head served by w1's FastChat worker {time.monotonic() - started:.1f}s later")
    def worker_row() -> dict:
        rows = json_of(cluster.baremetal("w1", "status", "--json"))["programs"]
        return next(p for p in rows if p["name"] == "fastchat-tiny-chat")
    wait_for(lambda: worker_row()["state"] == "RUNNING" and worker_row()["ready"], 30, 1.0,
                   "w1's worker RUNNING (past its startsecs) and ready in w1's own status")
    # It registered with the head's controller, which listens on the cluster network, under the address
    # the head reaches it at.
    answer = httpx.post(f"http://{cluster.host('head').address}:21001/get_worker_address",
                        json={"model": "tiny-chat"}, timeout=10, trust_env=False)
    assert answer.json()["address"] == f"http://{cluster.host('w1').address}:21002"


def test_without_the_token_a_node_is_refused(cluster, tmp_path):
    wrong = tmp_path / "wrong-token"
    wrong.write_text("0" * 64)
    wrong.chmod(0o600)
    code, output = ray_status(cluster, str(wrong))
    assert code != 0 and "InvalidAuthToken" in output, output
    stack = cluster.stacks["w1"]
    started = time.monotonic()
    attempt = cluster.host("w1").run(
        [stack.envs["ray"].interpreter, "-m", "ray.scripts.scripts", "start", "--block",
         "--address", stack.cluster.gcs_address, "--node-ip-address", cluster.host("w1").address,
         "--temp-dir", str(tmp_path / "ray"), "--node-manager-port", "7800", "--object-manager-port", "7801",
         "--disable-usage-stats"], timeout_s=120,
        env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(wrong), "PATH": os.environ["PATH"]})
    print(f"\na node with a wrong token was refused after {time.monotonic() - started:.1f}s")
    assert attempt.returncode != 0 and "InvalidAuthToken" in attempt.stdout + attempt.stderr
    assert len([s for s in cluster.states().values() if s.state == "alive"]) == 2


def worker_pid(run: ClusterRun) -> int:
    return run.supervisor("w1").process("ray-worker").pid


def check_loss_and_return(run: ClusterRun, what: str, cause, cure=None) -> None:
    """Cause a loss of w1, time how long the head takes to see it, cure it, time how long until w1 is back.
    The head's watchdog restarts the program on Ray once per loss; while w1 is away (frozen, unplugged) it
    marks w1's FastChat worker unreachable, and the gateway holds a request for it no longer than
    api.hold_timeout, then answers 503 saying so, instead of hanging."""
    before = run.states()["w1"].node_id
    starts = run.ray_starts("w1")
    restarts = len(run.events("head", "restart", "ray-driver"))
    started, fault_s = time.monotonic(), time.time()
    cause()
    # Ray declares this incarnation of w1 dead (a killed one may be back, as a new one, by then).
    wait_for(lambda: run.incarnation_dead(before), LOST_S, 0.1, f"Ray declaring w1 ({before}) dead")
    lost_s = time.monotonic() - started
    try:
        wait_for(lambda: len(run.events("head", "restart", "ray-driver")) > restarts, 15, 0.2,
                       "the head's watchdog restarting the program on Ray")
    except AssertionError as error:
        recent = "\n".join(f"{e['kind']} {e.get('program')}: {e['message']}" for e in run.events("head")[-15:])
        raise AssertionError(f"{error}\nthe head's last events:\n{recent}\n{log_of(run, 'head', 'watchdog')}") from None
    restart = run.events("head", "restart", "ray-driver")[-1]
    # The test driver's actor on w1 dies with the node, so its /health may fail too (vLLM's would not):
    # whichever rule sees it first restarts it, once.
    assert "Ray lost node w1" in restart["message"] or "probes failed" in restart["message"], restart
    print(f"\n{what}: the head's watchdog restarted ray-driver {restart['time_s'] - fault_s:.1f}s after the fault")
    if cure:
        # One failed probe makes the worker unhealthy but still tried last; `unreachable` (after
        # unhealthy_after probes) is what makes the gateway skip it.
        wait_for(lambda: run.watchdog_entry("head", "fastchat-tiny-chat").get("phase") == "unreachable", 30, 0.2,
                       "the head's watchdog marking w1's worker unreachable")
        outcome = chat_outcome(run)
        print(f"\n{what}: a chat meanwhile: {outcome}")
        assert outcome.startswith("503") and "api.hold_timeout" in outcome, outcome
        cure()
    cured = time.monotonic()
    back_s = run.wait_states({"w1": "alive"}, BACK_S)
    run.wait_ray_started("w1", starts)
    after = run.states()["w1"]
    wait_for(lambda: chat_works(run), BACK_S, 1.0, "w1's FastChat worker serving through the head again")
    print(f"\n{what}: lost after {lost_s:.1f}s, alive again {back_s:.1f}s after the cure, chat through "
          f"the head {time.monotonic() - cured:.1f}s after the cure ({time.monotonic() - started:.1f}s in all)")
    assert after.node_id != before, "w1 came back as a new Ray node"
    wait_for(lambda: cluster_driver_serves(run), BACK_S, 0.5, "the Ray driver serving again on both nodes")
    assert len(run.events("head", "restart", "ray-driver")) == restarts + 1, "one restart per loss"
    assert run.states()["head"].state == "alive"


def cluster_driver_serves(run: ClusterRun) -> bool:
    code, body = run.get("head", DRIVER_URL)
    return code == 200 and len(json.loads(body)["nodes"]) == 2


def test_killed_worker_is_seen_lost_and_rejoins(cluster):
    pid = worker_pid(cluster)
    check_loss_and_return(cluster, "ray-worker killed (SIGKILL)", lambda: os.kill(pid, signal.SIGKILL))
    assert worker_pid(cluster) != pid, log_of(cluster, "w1", "ray-worker")


def test_frozen_host_is_seen_lost_and_rejoins_when_thawed(cluster):
    host = cluster.host("w1")
    pid = worker_pid(cluster)
    check_loss_and_return(cluster, "host w1 frozen (SIGSTOP to every process)",
                          lambda: host.signal_all(signal.SIGSTOP), lambda: host.signal_all(signal.SIGCONT))
    # Thawed, its raylet learns it was declared dead and exits; supervisord starts a new one.
    assert worker_pid(cluster) != pid


def test_unplugged_host_is_seen_lost_and_rejoins_when_plugged(cluster):
    host = cluster.host("w1")
    check_loss_and_return(cluster, "host w1 unplugged (link down)", host.unplug, host.plug)
