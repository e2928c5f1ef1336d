"""The ``advisor`` command line: a thin layer over the ``simulator`` and ``advisor`` libraries.

Conventions shared by every command:

* ``--workspace DIR`` (else ``$ADVISOR_WORKSPACE``, else the current directory) holds banks, the MLflow store
  and reports; ``--json`` makes stdout carry exactly one JSON document (progress and logs go to stderr).
* Bad input (a :class:`~advisor.errors.AdvisorError`, a ``simulator.errors.SimulatorError`` or a click usage
  error) prints one line, ``Error: <message>``, on stderr and exits with code 2: no traceback, no usage block,
  and nothing written. Ctrl-C prints ``Interrupted`` and exits with 130.
* Commands are loaded lazily (:data:`COMMANDS`): one module per command or command group, each a thin
  layer that parses, calls the library and renders; what they share is in :mod:`advisor.cli.app`.
* Heavy libraries (torch, pandas, mlflow, optuna, scikit-learn, matplotlib) are imported inside the commands,
  so ``advisor --help`` stays instant.
* Results go to a stdout console and progress to a stderr console; tests inject their own
  (:class:`~advisor.application.console.Consoles`) as click's context object:
  ``runner.invoke(cli, args, obj=Consoles(...))``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import click

from advisor.cli.app import AdvisorGroup

COMMANDS = {
    "catalog": "advisor.cli.catalog:catalog",
    "compare": "advisor.cli.plan:compare",
    "evaluate": "advisor.cli.evaluate:evaluate",
    "export": "advisor.cli.identify:export",
    "identify": "advisor.cli.identify:identify",
    "plan": "advisor.cli.plan:plan",
    "report": "advisor.cli.runs:report",
    "runs": "advisor.cli.runs:runs",
    "simulate": "advisor.cli.simulate:simulate",
    "worker": "advisor.cli.plan:worker",
}
"""Every command, as ``{name: "module:function"}``: a command's module is imported only when the command is
looked up (run, or listed by ``advisor --help``), as ``mne/commands/utils.py`` does; each module imports its
heavy libraries inside the command, so listing stays instant."""


class LazyGroup(AdvisorGroup):
    """The ``advisor`` group: :data:`COMMANDS` loaded on first use, with the one-line error policy."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, _, name = COMMANDS[cmd_name].partition(":")
        command = getattr(importlib.import_module(module), name)
        self.add_command(command, cmd_name)
        return command


@click.group(
    name="advisor",
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="lr-advisor", prog_name="advisor")
def cli() -> None:
    """Which learning rule does a circuit use, and what must you record to tell?

    lr-advisor simulates populations of small networks learning under candidate learning rules, records them
    like an experiment, and advises which recording protocol identifies the rule. One simulated network
    stands for one animal: costs are hours per animal, and accuracy is the probability of naming the rule
    correctly from one animal's recording.

    \b
    Start with:
      advisor catalog                  what can be simulated and recorded
      advisor simulate --preset quick  the default bank (minutes on a laptop)
      advisor plan --observable activations --max-units 500
                                       the cheapest protocol that tells the rules apart
      advisor compare                  recording modalities side by side
      advisor runs list                past plans and identifications (MLflow)
    After the experiment:
      advisor export --run RUN_ID --out demo/   what a recording under the plan looks like (NWB)
      advisor identify mouse7.nwb --run RUN_ID  which rule a real recording is consistent with
    """


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``advisor``)."""
    cli.main(args=argv, prog_name="advisor")
