"""The `weights` commands: convert and inspect model weights files."""

from __future__ import annotations

from pathlib import Path

import typer

from synccurate.cli.common import fail

weights_app = typer.Typer(help="Convert and inspect model weights files.", no_args_is_help=True)


@weights_app.command("import")
def weights_import(
    checkpoint: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="syncnet_v2.model or lipsync_expert.pth."
    ),
    out_dir: Path = typer.Option(..., "-o", "--out-dir", help="Folder for the converted files."),
) -> None:
    """Convert a PyTorch pickle checkpoint to safetensors + a JSON sidecar (kind, checksums,
    preprocessing). The pickle is read with the weights-only unpickler; a file that needs
    code to load is refused and nothing in it runs. Later loads never touch pickle."""
    from synccurate.models.checkpoints import import_checkpoint
    from synccurate.models.weights import WeightsError

    try:
        path = import_checkpoint(checkpoint, out_dir)
    except WeightsError as error:
        fail(str(error))
    typer.echo(str(path))  # the file to pass to --weights
