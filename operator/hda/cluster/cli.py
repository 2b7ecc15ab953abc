"""`hda cluster up|down|env|images|check`: the local control plane from the shell."""

from __future__ import annotations

import logging
import shutil
import sys
import time

import click

from hda.cluster import host
from hda.cluster.binaries import REPO_ROOT, find_bin_dir
from hda.cluster.errors import ClusterError
from hda.cluster.images import IMAGE_BINARIES, build_images, registry_port_from_url
from hda.cluster.layout import DEFAULT_NAME, InvalidClusterNameError
from hda.cluster.plane import LocalCluster

_name_option = click.option(
    "--name",
    default=DEFAULT_NAME,
    show_default=True,
    help="Cluster name; clusters with different names run side by side.",
)


def _configure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )


def _cluster(name: str) -> LocalCluster:
    try:
        return LocalCluster(name)
    except InvalidClusterNameError as error:
        raise click.BadParameter(str(error), param_hint="--name") from error


@click.group()
def cluster() -> None:
    """A local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
    kube-scheduler and kwok nodes) on 127.0.0.1, built from the upstream binaries.

    With --real-nodes it also runs real nodes (kubelet, containerd, runc; kube-proxy and
    CoreDNS for Services and DNS) whose pods live on bridges the cluster creates and cannot
    reach anything beyond this machine. Real nodes need root."""


@cluster.command()
@_name_option
@click.option(
    "--nodes",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Simulated (kwok) nodes; tainted when the cluster also has real nodes.",
)
@click.option(
    "--fc-nodes",
    type=click.IntRange(min=0),
    default=None,
    help="How many of the kwok nodes carry the Fibre Channel labels.  [default: 2, at most --nodes]",
)
@click.option(
    "--real-nodes",
    type=click.IntRange(min=0, max=200),
    default=0,
    show_default=True,
    help="Real nodes (kubelet + containerd) that run containers; needs root.",
)
@click.option(
    "--real-fc-nodes",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="How many of the real nodes carry the Fibre Channel labels.",
)
def up(name: str, nodes: int, fc_nodes: int | None, real_nodes: int, real_fc_nodes: int) -> None:
    """Start the cluster (or keep it, if it is healthy) and wait until every node is Ready.

    On a running cluster this only adds missing kwok nodes; real nodes are fixed at start.
    Prints the `export KUBECONFIG=...` line on stdout.
    """
    if fc_nodes is None:
        fc_nodes = min(2, nodes)
    if fc_nodes > nodes:
        raise click.BadParameter(f"cannot exceed --nodes ({nodes})", param_hint="--fc-nodes")
    if real_fc_nodes > real_nodes:
        raise click.BadParameter(
            f"cannot exceed --real-nodes ({real_nodes})", param_hint="--real-fc-nodes"
        )
    if nodes + real_nodes == 0:
        raise click.BadParameter("a cluster needs at least one node", param_hint="--nodes")
    _configure_logging()
    plane = _cluster(name)
    started = time.monotonic()
    try:
        plane.up(nodes=nodes, fc_nodes=fc_nodes, real_nodes=real_nodes, real_fc_nodes=real_fc_nodes)
    except ClusterError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"cluster {name!r} ready in {time.monotonic() - started:.1f}s", err=True)
    click.echo(plane.env_line())


@cluster.command()
@_name_option
def down(name: str) -> None:
    """Stop every process of the cluster and remove its state (and, for real nodes, every
    mount, bridge, iptables chain and cgroup they made)."""
    _configure_logging()
    plane = _cluster(name)
    try:
        plane.down()
    except ClusterError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"cluster {name!r} is down", err=True)


@cluster.command()
@_name_option
def env(name: str) -> None:
    """Print `export KUBECONFIG=...` for the cluster (use: eval "$(hda cluster env)")."""
    plane = _cluster(name)
    if plane.state() is None:
        raise click.ClickException(
            f"cluster {name!r} is not up (no state in {plane.layout.state_dir}); "
            f"run `hda cluster up --name {name}`"
        )
    click.echo(plane.env_line())


@cluster.command()
@_name_option
@click.option(
    "--registry",
    "registry_url",
    metavar="URL",
    help="The loopback registry to push to (default: the registry of cluster --name).",
)
def images(name: str, registry_url: str | None) -> None:
    """Build the runtime/operator image (the project's Dockerfile, with BuildKit) and the Valkey
    image, and push them to the cluster's loopback registry. Needs root; no Docker daemon."""
    _configure_logging()
    try:
        if registry_url is None:
            registry_url = _cluster(name).registry_url()
        registry_port_from_url(registry_url)
        bin_dir = find_bin_dir(IMAGE_BINARIES)
        built = build_images(registry_url, bin_dir, REPO_ROOT)
    except ClusterError as error:
        raise click.ClickException(str(error)) from error
    for image in built:
        for reference in image.references:
            click.echo(f"{reference}@{image.digest}")
        click.echo(
            f"  {image.size_bytes / 1e6:.1f} MB compressed, built in {image.seconds:.1f}s",
            err=True,
        )


#: Debian's commands `hda cluster images` runs besides the pinned BuildKit.
_IMAGE_BUILD_TOOLS = ("mmdebstrap", "runc")


@cluster.command()
def check() -> None:
    """Can this host run real nodes and build images? Prints what is missing and exits 1, or
    says the host is fit. (`make demo` uses this to choose real nodes or kwok.)"""
    problems = host.host_problems(host.gather_facts())
    missing = [tool for tool in _IMAGE_BUILD_TOOLS if shutil.which(tool) is None]
    if missing:
        problems.append(
            f"missing commands for image builds: {', '.join(missing)} "
            "(Debian: apt-get install mmdebstrap runc)"
        )
    if problems:
        click.echo("this host cannot run real nodes:\n- " + "\n- ".join(problems), err=True)
        sys.exit(1)
    click.echo("this host can run real nodes and build images", err=True)
