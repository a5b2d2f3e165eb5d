"""`baremetal cluster ...`: the Ray token, a node's preflight check, the nodes as the head sees them, and
stale shared memory. Heavy imports happen inside each command."""

from __future__ import annotations

from pathlib import Path

import click

from baremetal.cli.common import BaremetalGroup, config_option, json_option, load, print_json


def _cluster_stack(config_path: Path):
    from baremetal.errors import UsageError

    stack = load(config_path)
    if stack.cluster is None:
        raise UsageError(f"{stack.source} has no [cluster] section: it describes a single node")
    return stack


@click.group(cls=BaremetalGroup)
def cluster() -> None:
    """Several nodes from one stack file: Ray's token, each node's check, every node's state.

    \b
    A two-node start:
      baremetal cluster token        on one machine: writes the token file named by [cluster] token_file
      (copy the stack file and the token file to the same paths on every node, token mode 0600)
      baremetal cluster check        on each node: is this node ready to join?
      baremetal up                   on each node (the head first): Ray, then the models placed there
      baremetal status               on the head: its programs and every node of the cluster
    """


@cluster.command()
@click.option("--force", is_flag=True, help="Replace an existing token (every node then needs the new one).")
@config_option
def token(force: bool, config_path: Path) -> None:
    """Write a new random token for Ray's authentication into [cluster] token_file (mode 0600).

    Every Ray process of the cluster must read the same token: copy the file to the same path on
    every node. The token is never printed. An existing file is kept unless --force.
    """
    from baremetal.cluster.token import write_token

    stack = _cluster_stack(config_path)
    path = stack.cluster.token_file
    if write_token(path, force):
        click.echo(f"wrote a new Ray token to {path} (mode 0600); copy it to {path} on every node "
                   f"({', '.join(n.name for n in stack.cluster.nodes)}), e.g. with scp -p")
    else:
        click.echo(f"{path} already holds a token; kept it (use --force to replace it on every node)")


@cluster.command()
@json_option
@config_option
def check(as_json: bool, config_path: Path) -> None:
    """Check that this node can join: which node it is, its address, the token file, the Ray env.

    Exits 1 when something would keep the node out of the cluster, naming what to fix.
    """
    from baremetal.cluster.preflight import preflight

    stack = _cluster_stack(config_path)
    findings = preflight(stack)
    if as_json:
        print_json({"node": stack.cluster.local, "ok": all(f.ok for f in findings),
                    "checks": [{"what": f.what, "ok": f.ok, "detail": f.detail} for f in findings]})
    else:
        node = stack.cluster.local_node
        click.echo(f"node {node.name} ({node.role}, {node.address}) of the cluster at {stack.cluster.gcs_address}")
        for finding in findings:
            click.echo(f"  {'ok  ' if finding.ok else 'FAIL'} {finding.what}: {finding.detail}")
    if not all(finding.ok for finding in findings):
        click.get_current_context().exit(1)


@cluster.command(name="status")
@click.option("--probe-timeout", metavar="DURATION", default="500ms", show_default=True,
              help="How long each probe of a model on another node may take (a duration, or a bare number "
                   "of seconds).")
@json_option
@config_option
def cluster_status(probe_timeout: str, as_json: bool, config_path: Path) -> None:
    """Every node as Ray sees it from the head (alive, lost, missing), and the models on other nodes.

    Reads what the head's ray-monitor program writes; works on the head only. Exits 1 when a node is
    not alive or a model on another node does not answer.
    """
    from baremetal.cli.cluster_view import format_cluster
    from baremetal.cluster.view import cluster_json, collect_cluster
    from baremetal.config.types import FieldError, duration_s
    from baremetal.errors import UsageError
    from baremetal.stack.http_client import LiteClient

    stack = _cluster_stack(config_path)
    if not stack.is_head:
        raise UsageError(f"this is node {stack.cluster.local!r}; the cluster is watched from the head "
                         f"({stack.cluster.head.name}, {stack.cluster.head.address}): run it there")
    try:
        timeout_s = duration_s(probe_timeout)
    except FieldError as error:
        raise click.BadParameter(str(error), param_hint="--probe-timeout") from None
    view = collect_cluster(stack, LiteClient(), probe_timeout_s=timeout_s)
    if as_json:
        print_json(cluster_json(view))
    else:
        click.echo(format_cluster(view, stack.cluster.gcs_address))
    if not view.healthy:
        click.get_current_context().exit(1)


@cluster.command(name="clean-shm")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@click.option("--min-age", metavar="DURATION", default="60s", show_default=True,
              help="Leave segments touched more recently than this (an engine may be creating them); a "
                   "duration, or a bare number of seconds.")
@config_option
def clean_shm(dry_run: bool, min_age: str, config_path: Path) -> None:
    """Remove shared-memory segments that dead engines left (psm_* in /dev/shm, vllm_dist_* in <root>/tmp).

    Only segments that no live process maps or holds open, and older than --min-age, are removed.
    """
    import time

    from baremetal.cluster import shm
    from baremetal.config.types import FieldError, duration_s

    stack = load(config_path)
    try:
        min_age_s = duration_s(min_age)
    except FieldError as error:
        raise click.BadParameter(str(error), param_hint="--min-age") from None
    removed = shm.clean([Path("/dev/shm"), stack.root / "tmp"], time.time(), min_age_s, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for segment in removed:
        click.echo(f"{verb} {segment.path} ({segment.size_bytes} bytes)")
    total = sum(segment.size_bytes for segment in removed)
    click.echo(f"{verb} {len(removed)} stale segment(s), {total} bytes")


COMMANDS = [cluster]
