"""`hda operator`: run the kopf operator against the current kubeconfig (or in-cluster)."""

from __future__ import annotations

import logging
import os
import sys

import click

from hda.api.consts import ENV_LOG_FORMAT, OPERATOR_HEALTH_PORT
from hda.api.images import (
    BUILTIN_RUNTIME_IMAGE,
    BUILTIN_VALKEY_IMAGE,
    ENV_DEFAULT_RUNTIME_IMAGE,
    ENV_DEFAULT_VALKEY_IMAGE,
    DefaultImages,
    image_reference_problem,
)


def _image_reference(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Reject a configured default image before the operator starts (click names the option
    and its environment variable in the error)."""
    problem = image_reference_problem(value)
    if problem is not None:
        raise click.BadParameter(f"{value!r} is not an image reference: {problem}")
    return value


@click.command("operator")
@click.option(
    "-n",
    "--namespace",
    "namespaces",
    multiple=True,
    help="Watch only this namespace (repeatable; glob patterns allowed).",
)
@click.option("-A", "--all-namespaces", is_flag=True, help="Watch every namespace (the default).")
@click.option(
    "--liveness",
    default=f"http://0.0.0.0:{OPERATOR_HEALTH_PORT}/healthz",
    show_default=True,
    help="Health endpoint URL; an empty string disables it.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=1, max=65535),
    default=None,
    help="Serve Prometheus /metrics (reconcile figures, worker replicas, backlog) on this port.",
)
@click.option("--metrics-host", default="0.0.0.0", show_default=True)  # noqa: S104 (a server)
@click.option(
    "--resync",
    type=click.FloatRange(min=1.0),
    default=15.0,
    show_default=True,
    help="Seconds between full reconciles of each HDA when nothing happens.",
)
@click.option(
    "--log-format",
    type=click.Choice(["json", "text"]),
    default=None,
    help=f"Log format; default ${ENV_LOG_FORMAT}, else text on a terminal and json otherwise.",
)
@click.option(
    "--standalone",
    is_flag=True,
    help="Accepted for kopf compatibility: the operator always runs standalone (no peering).",
)
@click.option(
    "--default-runtime-image",
    envvar=ENV_DEFAULT_RUNTIME_IMAGE,
    default=BUILTIN_RUNTIME_IMAGE,
    show_default=True,
    show_envvar=True,
    callback=_image_reference,
    help="Image of ingest, workers and output for HDAs whose spec.image is unset.",
)
@click.option(
    "--default-valkey-image",
    envvar=ENV_DEFAULT_VALKEY_IMAGE,
    default=BUILTIN_VALKEY_IMAGE,
    show_default=True,
    show_envvar=True,
    callback=_image_reference,
    help="Valkey image for HDAs whose spec.redis.image is unset.",
)
@click.option(
    "--lag-probe-address",
    envvar="HDA_LAG_PROBE_ADDRESS",
    default=None,
    show_envvar=True,
    help=(
        "host:port of the Valkey to measure every HDA's lag at, instead of each HDA's Valkey "
        "Service: for an operator outside the cluster, where Service names do not resolve."
    ),
)
@click.option(
    "--buffer-probe/--no-buffer-probe",
    envvar="HDA_BUFFER_PROBE",
    default=True,
    show_default=True,
    show_envvar=True,
    help=(
        "Ask the Valkey pods and sentinels of replicated and cluster HDAs for their roles (to "
        "form clusters, roll Valkey with failovers, and report status.redis). Off: for an "
        "operator outside the cluster, where pod names do not resolve."
    ),
)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def operator(  # noqa: PLR0917 - click passes options positionally
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    liveness: str,
    metrics_port: int | None,
    metrics_host: str,
    resync: float,
    log_format: str | None,
    standalone: bool,
    default_runtime_image: str,
    default_valkey_image: str,
    lag_probe_address: str | None,
    buffer_probe: bool,
    verbose: bool,
) -> None:
    """Run the HyperDriveAccelerator operator (standalone: one replica, no peering)."""
    import kopf  # noqa: PLC0415 - `hda --help` must not pay for kopf

    from . import handlers  # noqa: F401, PLC0415 - importing registers the handlers

    if all_namespaces and namespaces:
        raise click.UsageError("--all-namespaces and --namespace exclude each other")
    chosen = (
        log_format or os.environ.get(ENV_LOG_FORMAT) or ("text" if sys.stderr.isatty() else "json")
    )
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if chosen == "json" else kopf.LogFormat.FULL,
        log_prefix=chosen != "json",
    )
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_quiet_routine_handlers)
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # liveness probes
    default_images = DefaultImages(runtime=default_runtime_image, valkey=default_valkey_image)
    logging.getLogger("hda.controller").info(
        "default images",
        extra={"runtime": default_images.runtime, "valkey": default_images.valkey},
    )
    memo = kopf.Memo(
        resync_seconds=resync,
        default_images=default_images,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        lag_probe_address=_address(lag_probe_address),
        buffer_probe=buffer_probe,
    )
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        liveness_endpoint=liveness or None,
        memo=memo,
    )


def _quiet_routine_handlers(record: logging.LogRecord) -> bool:
    """Drop kopf's per-event "Handler 'hda_wake_…' succeeded." lines (one per child event)."""
    message = str(record.msg)
    return not (message.startswith("Handler 'hda_") and message.endswith("succeeded."))


def _address(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter(
            f"{value!r} is not host:port", param_hint="--lag-probe-address/HDA_LAG_PROBE_ADDRESS"
        )
    return host, int(port)
