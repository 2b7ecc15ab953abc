"""`hda crd`: print the CustomResourceDefinition generated from the models."""

from __future__ import annotations

import click

from hda.api.crd import render_crd


@click.command()
def crd() -> None:
    """Print the HyperDriveAccelerator CRD generated from the pydantic models."""
    click.echo(render_crd(), nl=False)
