"""[cluster]: one stack file for several nodes, which node this machine is, and every mistake reported."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from baremetal.config import parse_stack
from baremetal.config.cluster import NodeChoice, choose_node
from baremetal.config.model import ClusterNode
from baremetal.errors import ConfigError

FILE = Path("/srv/cluster/baremetal.toml")
NODES = '''
[stack]
name = "llm"
root = "/data/bm"

[cluster]

[[cluster.node]]
name = "gpu1"
address = "10.0.0.1"
role = "head"
interface = "eth1"

[[cluster.node]]
name = "gpu2"
address = "10.0.0.2"
interface = "ens5"
'''


def parse(body: str = "", node: str | NodeChoice | None = "gpu1", nodes: str = NODES):
    return parse_stack(textwrap.dedent(nodes) + textwrap.dedent(body), FILE, node)


def errors_of(body: str, node: str | NodeChoice | None = "gpu1", nodes: str = NODES) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(body, node, nodes)
    return [f"{issue.path}: {issue.message}" for issue in caught.value.issues]


def test_defaults_for_each_node():
    body = '''
        [[model]]
        name = "big"
        path = "/m/big"
        tensor_parallel = 8
        pipeline_parallel = 2
        distributed_backend = "ray"
        [[model]]
        name = "small"
        path = "/m/small"
        engine = "fastchat"
        node = "gpu2"
    '''
    head, worker = parse(body, "gpu1"), parse(body, "gpu2")
    cluster = head.cluster
    assert cluster.local == "gpu1" and worker.cluster.local == "gpu2"
    assert head.is_head and not worker.is_head
    assert cluster.gcs_address == "10.0.0.1:6379"
    assert cluster.token_file == Path("/srv/cluster/ray-token")       # beside the stack file
    assert cluster.temp_dir == Path("/data/bm/ray") and not cluster.dashboard
    assert cluster.ports.node_manager == 6800 and cluster.ports.min_worker == 10002
    assert cluster.object_store_memory_bytes == 2 * 2**30
    big, small = head.models
    assert big.node == "gpu1" and big.host == "127.0.0.1" and big.world_size == 16 and big.uses_ray
    # The model on gpu2 binds gpu2's cluster address, and everyone reaches it there.
    assert small.node == "gpu2" and small.host == "10.0.0.2" and small.url.startswith("http://10.0.0.2:")
    # Its controller is on the head, listening where the remote worker can register.
    assert head.controller.host == "10.0.0.1"
    # Ray runs in the env of the models that use it (their workers run on every node).
    assert cluster.env == "default"


def test_ray_env_is_implied_when_no_model_uses_ray():
    stack = parse('[[model]]\nname = "s"\npath = "/m/s"\nengine = "fastchat"\nnode = "gpu2"\n')
    env = stack.envs[stack.cluster.env]
    assert env.name == "ray" and env.packages == ("ray==2.60.0",) and env.path == Path("/data/bm/envs/ray")


def test_per_node_root_and_explicit_settings():
    nodes = NODES.replace('interface = "ens5"', 'interface = "ens5"\nroot = "/srv/bm2"\nnum_cpus = 8\ngpus = [0, 1]')
    nodes = nodes.replace("[cluster]\n", '[cluster]\ntoken_file = "/etc/bm/ray-token"\nobject_store_memory = "512MiB"\n'
                          'lost_after = "10s"\ndashboard = true\n[cluster.ports]\ngcs = 7000\n')
    stack = parse("", "gpu2", nodes)
    assert stack.root == Path("/srv/bm2") and stack.cluster.temp_dir == Path("/srv/bm2/ray")
    assert stack.envs["ray"].path == Path("/srv/bm2/envs/ray")
    node = stack.cluster.local_node
    assert node.gpus == (0, 1) and node.num_cpus == 8 and node.interface == "ens5"
    assert stack.cluster.gcs_address == "10.0.0.1:7000" and stack.cluster.dashboard
    assert stack.cluster.object_store_memory_bytes == 512 * 2**20 and stack.cluster.lost_after_s == 10
    assert parse("", "gpu1", nodes).root == Path("/data/bm")


def test_same_port_on_two_nodes_is_fine_but_not_on_one():
    two = '''
        [[model]]
        name = "a"
        path = "/m/a"
        engine = "fastchat"
        port = 21002
        [[model]]
        name = "b"
        path = "/m/b"
        engine = "fastchat"
        node = "gpu2"
        port = 21002
    '''
    assert parse(two).models[1].port == 21002
    assert errors_of(two.replace('node = "gpu2"\n', "")) == \
        ["model[1].port: port 21002 is already taken by model[0].port on node 'gpu1'"]


N = (ClusterNode("gpu1", "10.0.0.1", "head", Path("/r"), None, None, None),
     ClusterNode("gpu2", "10.0.0.2", "worker", Path("/r"), None, None, None))


@pytest.mark.parametrize("choice,name,error,warning", [
    (NodeChoice("gpu2", "--node", None), "gpu2", None, None),
    (NodeChoice("gpu2", "--node", ("10.0.0.2", "127.0.0.1")), "gpu2", None, None),
    (NodeChoice(None, "", ("127.0.0.1", "10.0.0.2")), "gpu2", None, None),
    (NodeChoice(None, "", ("127.0.0.1", "10.0.0.1")), "gpu1", None, None),
    (NodeChoice("gpu3", "$BAREMETAL_NODE", None), None, "$BAREMETAL_NODE names node 'gpu3', which is not in "
     "[[cluster.node]]; did you mean 'gpu2'? (nodes: gpu1 (10.0.0.1), gpu2 (10.0.0.2))", None),
    (NodeChoice(None, "", ("127.0.0.1", "192.168.1.5")), None, "none of the cluster's addresses is on this "
     "machine (nodes: gpu1 (10.0.0.1), gpu2 (10.0.0.2); this machine: 127.0.0.1, 192.168.1.5); run it on a "
     "cluster node, or say which node this is with --node NAME or $BAREMETAL_NODE", None),
    (NodeChoice(None, "", ("10.0.0.1", "10.0.0.2")), None, "this machine holds the addresses of several nodes "
     "(gpu1, gpu2); say which one it is with --node NAME or $BAREMETAL_NODE", None),
    (NodeChoice(None, "", None), None, "which node is this machine? say it with --node NAME or $BAREMETAL_NODE "
     "(nodes: gpu1 (10.0.0.1), gpu2 (10.0.0.2))", None),
    (NodeChoice("gpu1", "--node", ("10.0.0.2",)), "gpu1", None, "node 'gpu1' has address 10.0.0.1, which is not "
     "on this machine (its addresses: 10.0.0.2); its programs will fail to bind it: run this on that node, or "
     "fix its address"),
])
def test_choose_node(choice, name, error, warning):
    assert choose_node(N, choice) == (name, error, warning)


def test_wrong_node_is_a_config_error_and_a_foreign_one_a_warning():
    assert errors_of("", NodeChoice(None, "", ("192.168.9.9",)))[0].startswith(
        "cluster: none of the cluster's addresses is on this machine")
    stack = parse("", NodeChoice("gpu2", "--node", ("10.0.0.1",)))
    assert stack.cluster.local == "gpu2" and "not on this machine" in stack.warnings[0].message


@pytest.mark.parametrize("nodes_edit,expected", [
    (('role = "head"', 'role = "worker"'), 'cluster.node[0].role: a cluster has exactly one head (role = "head"), '
     "this one has 0"),
    (('interface = "ens5"', 'role = "head"'), 'cluster.node[1].role: a cluster has exactly one head '
     '(role = "head"), this one has 2'),
    (('name = "gpu2"', 'name = "gpu1"'), "cluster.node[1].name: 'gpu1' is already node[0]'s name"),
    (('address = "10.0.0.2"', 'address = "10.0.0.1"'), "cluster.node[1].address: '10.0.0.1' is already "
     "node[0]'s address"),
    (('address = "10.0.0.2"', 'address = "gpu2.lan"'), 'cluster.node[1].address: expected an IP address such as '
     '"10.0.0.1", got \'gpu2.lan\'; Ray binds addresses, not host names'),
    (('interface = "ens5"', 'interface = "eth 1"'), "cluster.node[1].interface: 'eth 1' is not a network "
     'interface name (e.g. "eth1", "ib0")'),
    (("[cluster]\n", '[cluster]\nobject_store_memory = 4096\n'), 'cluster.object_store_memory: sizes need a unit, '
     'e.g. "4096MiB" (units: B, KB, MB, GB, KiB, MiB, GiB, TiB)'),
    (("[cluster]\n", '[cluster]\nobject_store_memory = "10MiB"\n'), "cluster.object_store_memory: Ray needs at "
     "least 78MiB for its object store"),
    (("[cluster]\n", '[cluster]\nlost_after = "3s"\n'), "cluster.lost_after: must be at least 4s: Ray checks a node "
     "every 2s at most, and one slow answer from a busy node must not make it lost"),
    (("[cluster]\n", '[cluster]\n[cluster.ports]\nnode_manager = 10500\n'), "cluster.ports.node_manager: port "
     "10500 is inside Ray's worker range 10002-10999"),
    (("[cluster]\n", '[cluster]\n[cluster.ports]\nobject_manager = 6800\n'), "cluster.ports.object_manager: port "
     "6800 is already cluster.ports.node_manager"),
    (("[cluster]\n", '[cluster]\n[cluster.ports]\nmax_worker = 10000\n'), "cluster.ports.max_worker: must be "
     "above min_worker (10002)"),
    (("[cluster]\n", '[cluster]\ntemp_dir = "/a/very/long/folder/name/that/ray/cannot/use/for/its/sockets"\n'),
     "cluster.temp_dir: Ray's sockets under /a/very/long/folder/name/that/ray/cannot/use/for/its/sockets would pass "
     "the 107-byte limit of unix socket paths (it keeps about 63 bytes after it); set temp_dir to a path of at most "
     '44 bytes, e.g. "/tmp/ray-<stack>"'),
    (("[cluster]\n", '[cluster]\ndashbord = true\n'), "cluster.dashbord: unknown key; did you mean 'dashboard'?"),
])
def test_bad_cluster_tables(nodes_edit, expected):
    nodes = NODES.replace(*nodes_edit, 1)
    assert expected in errors_of("", "gpu1", nodes)


@pytest.mark.parametrize("body,expected", [
    ('[[model]]\nname = "a"\npath = "/m/a"\nnode = "gpu3"\n',
     "model[0].node: no [[cluster.node]] is named 'gpu3'; did you mean 'gpu2'?"),
    ('[[model]]\nname = "a"\npath = "/m/a"\ndistributed_backend = "ray"\ntensor_parallel = 4\nnode = "gpu2"\n',
     'model[0].node: models on Ray (distributed_backend = "ray") run on the head (\'gpu1\') and use the GPUs of '
     "every node through Ray; remove node"),
    ('[[model]]\nname = "a"\npath = "/m/a"\ndistributed_backend = "ray"\ngpus = [0, 1]\n',
     "model[0].gpus: Ray assigns this model's GPUs on every node; remove gpus (limit what Ray may use on a node "
     "with [[cluster.node]] gpus)"),
    ('[[model]]\nname = "a"\npath = "/m/a"\ndistributed_backend = "ray"\ntensor_parallel = 4\nenv = "other"\n'
     '[env.other]\n[[model]]\nname = "b"\npath = "/m/b"\ndistributed_backend = "ray"\ntensor_parallel = 2\n',
     "model[1].env: Ray runs this model's workers on every node in the cluster's env ('other'); set env = 'other' "
     "or [cluster] env = 'default'"),
    ('[[model]]\nname = "a"\npath = "/m/a"\nnode = "gpu2"\nhost = "127.0.0.1"\n',
     "model[0].host: 'a' runs on node 'gpu2' but listens on 127.0.0.1: the head's gateway cannot reach it; remove "
     "host (it then binds the node's address)"),
    ('[[model]]\nname = "a"\npath = "/m/a"\nport = 6379\n',
     "model[0].port: port 6379 is already taken by cluster.ports.gcs on node 'gpu1'"),
    ('[[model]]\nname = "a"\npath = "/m/a"\nport = 10500\nnode = "gpu2"\n',
     "model[0].port: port 10500 is already taken by cluster.ports.min_worker..max_worker on node 'gpu2'"),
    ('[[model]]\nname = "a"\npath = "/m/a"\nengine = "fastchat"\nnode = "gpu2"\n[controller]\nhost = "127.0.0.1"\n',
     "controller.host: FastChat workers on other nodes (a) register with the controller, which listens on "
     "127.0.0.1 only; remove host (it then listens on the head's address 10.0.0.1)"),
    ('[[program]]\nname = "driver"\ncommand = ["x"]\nray_gpus = 2\nnode = "gpu2"\n',
     "program[0].node: programs that use Ray (ray_gpus) run on the head, where the cluster is watched; remove node"),
])
def test_bad_placements(body, expected):
    assert expected in errors_of(body)


def test_node_gpus_have_one_owner():
    nodes = NODES.replace('interface = "ens5"', 'interface = "ens5"\ngpus = [0, 1]')
    body = '[[model]]\nname = "a"\npath = "/m/a"\nnode = "gpu2"\ngpus = [1]\n'
    assert errors_of(body, "gpu1", nodes) == ["model[0].gpus: GPU 1 of node 'gpu2' is given to Ray "
                                              "(cluster.node[1].gpus); a GPU has one owner"]


def test_single_node_stacks_refuse_cluster_keys():
    single = '[stack]\nname = "one"\n'
    with pytest.raises(ConfigError) as caught:
        parse_stack(single + '[[model]]\nname = "a"\npath = "/m/a"\nnode = "gpu2"\n', FILE, None)
    assert caught.value.issues[0].message == "places this on a cluster node, but there is no [cluster] section"
    with pytest.raises(ConfigError) as caught:
        parse_stack(single, FILE, NodeChoice("gpu2", "--node", None))
    assert "--node gpu2 was given, but this stack file has no [cluster] section" in str(caught.value)
    # $BAREMETAL_NODE set for another stack does not break a single-node one.
    assert parse_stack(single, FILE, NodeChoice("gpu2", "$BAREMETAL_NODE", None)).cluster is None


def test_a_cluster_file_needs_its_nodes():
    assert errors_of("", "gpu1", '[stack]\nname = "x"\n[cluster]\n') == [
        'cluster.node: list the nodes: [[cluster.node]] with name, address and role = "head" for one of them']
