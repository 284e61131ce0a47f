"""The ``diffloss`` command: one group, one module per subcommand, each thin over the Python API."""

from __future__ import annotations

import click

from diffloss import __version__
from diffloss.errors import DifflossError


class UserError(click.ClickException):
    """Bad input: printed as one line ``Error: ...`` with exit code 2."""

    exit_code = 2


class DifflossGroup(click.Group):
    """A click group that turns ``DifflossError`` from any subcommand into a one-line error."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DifflossError as e:
            raise UserError(str(e)) from None


@click.group(cls=DifflossGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="diffloss")
def cli() -> None:
    """diffloss: know what your diffusion loss can reach.

    Conventions used by every subcommand: the forward process is x_t = alpha*x0 + sigma*eps; a noise
    level is given as the noise-to-signal ratio s = sigma/alpha (EDM's and VE's "sigma") or as the
    log-SNR lambda = -2 log s. Losses are per-dimension means (like F.mse_loss) unless a flag says
    otherwise. Built-in datasets: mnist (train 50k; also mnist:valid, mnist:test), mnist14 (the same 2x2
    mean-pooled to 14x14; mnist14:valid, mnist14:test), digits, gmm, moons, rings; any .npy/.npz array of shape
    (N, ...) or an image folder works too.

    Run `diffloss COMMAND --help` for the manual of each command.
    """


def _register() -> None:
    from diffloss.cli import bridge, diagnose, eval, formulation, info, optimal_loss, sample, train, weighting

    for mod in (info, formulation, optimal_loss, diagnose, weighting, train, sample, eval, bridge):
        cli.add_command(mod.command)


_register()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="diffloss")
