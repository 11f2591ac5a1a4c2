"""Command-line interface: the Typer app `app`, one thin command per library call.

The commands live by stage (`scoring`, `curation`, `training`, `weights`); what they share
is in `common`. They are registered here, in the order `synccurate --help` lists them.
"""

from __future__ import annotations

import typer

from synccurate.cli import curation, scoring, training
from synccurate.cli.weights import weights_app

app = typer.Typer(
    help="Measure and repair audio-video sync of talking-head clips with IC-SyncNet.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

app.command(help=scoring.SCORE_HELP)(scoring.score)
app.command()(scoring.compact)
app.command()(scoring.manifest)
app.command()(scoring.shards)
app.command("filter")(curation.filter_)
app.command()(curation.fix)
app.command()(curation.cut)
app.command()(training.synth)
app.command()(training.train)
app.command("eval")(training.eval_)
app.command()(curation.plot)
app.add_typer(weights_app, name="weights")
app.command()(curation.report)
app.command()(training.demo)
