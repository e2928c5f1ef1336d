"""The ``advisor`` command line: a thin layer over the ``simulator`` and ``advisor`` libraries.

Conventions shared by every command:

* ``--workspace DIR`` (else ``$ADVISOR_WORKSPACE``, else the current directory) holds banks, the MLflow store
  and reports; ``--json`` makes stdout carry exactly one JSON document (progress and logs go to stderr).
* Bad input (a :class:`~advisor.errors.AdvisorError`, a ``simulator.errors.SimulatorError`` or a click usage
  error) prints one line, ``Error: <message>``, on stderr and exits with code 2: no traceback, no usage block,
  and nothing written. Ctrl-C prints ``Interrupted`` and exits with 130.
* Heavy libraries (torch, pandas, mlflow, optuna, scikit-learn, matplotlib) are imported inside the commands,
  so ``advisor --help`` stays instant.
* Results go to a stdout console and progress to a stderr console; tests inject their own
  (:class:`~advisor.console.Consoles`) as click's context object:
  ``runner.invoke(cli, args, obj=Consoles(...))``.
"""

from __future__ import annotations

import errno
import functools
import math
import os
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from advisor.console import Consoles
from advisor.errors import AdvisorError
from advisor.workspace import ENV_VAR, Workspace

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import Console
    from rich.progress import Progress

    from simulator.config import SimulationConfig
    from simulator.pipeline import SimulationResult

EXIT_USAGE = 2
"""Exit code of every user error (bad option, bad preset, bad workspace, ...)."""
EXIT_INTERRUPTED = 130
"""Exit code after Ctrl-C (128 + SIGINT), as shells report it."""


# ------------------------------------------------------------------------------------------ error policy
def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Exception types that are the user's input, not a bug: reported in one line, exit code 2.

    ``simulator.errors`` is looked up in ``sys.modules`` rather than imported, so this module never imports
    the simulator package at start-up (no ``SimulatorError`` can have been raised unless it is loaded).
    """
    types: list[type[BaseException]] = [AdvisorError]
    simulator_errors = sys.modules.get("simulator.errors")
    if simulator_errors is not None:
        types.append(simulator_errors.SimulatorError)
    return tuple(types)


def _print_error(message: str) -> None:
    # click.echo, not rich: rich would wrap a long message over several lines.
    click.echo(f"Error: {_one_line(message)}", err=True)


class AdvisorGroup(click.Group):
    """A click group whose ``main`` applies the one-line error policy to every subcommand."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> int:
        """Run the command line; exit with its code (``standalone_mode=False``: return the code instead).

        Exit codes: 0 success (``--help`` included); 2 bad input, with one ``Error:`` line on stderr; 1 a
        broken output pipe or a click abort; 130 Ctrl-C. Any other exception is a bug: it propagates with its
        traceback.
        """
        argv = list(sys.argv[1:] if args is None else args)
        code = self._run(argv, prog_name or "advisor", complete_var, extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def _run(self, args: list[str], prog_name: str, complete_var: str | None, extra: dict[str, Any]) -> int:
        self._main_shell_completion(extra, prog_name, complete_var)
        try:
            with self.make_context(prog_name, args, **extra) as ctx:
                self.invoke(ctx)
            return 0
        except click.exceptions.Exit as e:  # --help, --version, ctx.exit(n)
            return e.exit_code
        except click.exceptions.NoArgsIsHelpError as e:  # bare `advisor`: the help, as click shows it
            e.show()
            return e.exit_code
        except click.ClickException as e:  # usage errors: bad option value, unknown option, missing argument
            _print_error(e.format_message())
            return EXIT_USAGE
        except click.exceptions.Abort:
            click.echo("Aborted", err=True)
            return 1
        except KeyboardInterrupt:
            click.echo("Interrupted", err=True)
            return EXIT_INTERRUPTED
        except OSError as e:
            if e.errno != errno.EPIPE:
                raise
            _silence_broken_pipe()
            return 1
        except Exception as e:
            if isinstance(e, _user_error_types()):
                _print_error(str(e))
                return EXIT_USAGE
            raise


def _silence_broken_pipe() -> None:
    """After the reader of stdout went away (``advisor catalog --json | head``), point stdout at devnull so
    the interpreter's final flush does not print a second error."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (e.g. under a test runner)
        pass
    finally:
        os.close(devnull)


# ------------------------------------------------------------------------------------------ shared options
@dataclass(frozen=True)
class App:
    """What every command gets from the shared options.

    Attributes:
        consoles: stdout console for results, stderr console for progress and logs.
        json_output: ``--json``: stdout carries exactly one JSON document.
        workspace_dir: the chosen workspace directory (not yet checked; see :meth:`open_workspace`).
    """

    consoles: Consoles
    json_output: bool
    workspace_dir: Path

    def open_workspace(self) -> Workspace:
        """Check (and create if needed) the workspace; AdvisorError if it is not a writable directory."""
        return Workspace.open(self.workspace_dir)


def common_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--workspace`` and ``--json`` to a command, and pass it an :class:`App` as first argument."""

    @click.option(
        "--json",
        "json_output",
        is_flag=True,
        help="Print exactly one JSON document on stdout (progress and logs still go to stderr).",
    )
    @click.option(
        "--workspace",
        type=click.Path(path_type=Path),
        envvar=ENV_VAR,
        show_envvar=True,
        default=None,
        metavar="DIR",
        help="Workspace directory for banks, the MLflow store and reports [default: the current directory].",
    )
    @functools.wraps(command)
    def wrapper(*args: Any, workspace: Path | None, json_output: bool, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        consoles = ctx.find_object(Consoles) or Consoles()
        app = App(consoles=consoles, json_output=json_output, workspace_dir=workspace or Path.cwd())
        return command(app, *args, **kwargs)

    return wrapper


# ------------------------------------------------------------------------------------------ the group
@click.group(
    name="advisor",
    cls=AdvisorGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="lr-advisor", prog_name="advisor")
def cli() -> None:
    """Which learning rule does a circuit use, and what must you record to tell?

    lr-advisor simulates populations of small networks learning under candidate learning rules, records them
    like an experiment, and advises which recording protocol identifies the rule.

    \b
    Start with:
      advisor catalog                  what can be simulated and recorded
      advisor simulate --preset quick  the default bank (minutes on a laptop)
      advisor plan --observable activations --max-units 500
                                       the cheapest protocol that tells the rules apart
      advisor compare                  recording modalities side by side
      advisor runs list                past plans (MLflow)
    """


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``advisor``)."""
    cli.main(args=argv, prog_name="advisor")


# ------------------------------------------------------------------------------------------ catalog
def _task_metric(task: Any) -> str:
    metric = getattr(task, "metric", None)
    if metric is None:  # tasks declare the metric on their loaded data; classification is scored by accuracy
        metric = "accuracy" if task.kind == "classification" else "r2"
    return str(metric)


def catalog_document() -> dict[str, list[dict[str, Any]]]:
    """Everything that can be simulated, as plain data (the ``catalog --json`` document)."""
    from simulator.networks import ARCHITECTURES
    from simulator.presets import list_presets, load_preset
    from simulator.rules import RULES
    from simulator.tasks import CURRICULA, TASKS

    presets = []
    for name in list_presets():
        config = load_preset(name)
        presets.append({"name": name, "n_networks": config.n_networks, "description": config.description})
    return {
        "rules": [
            {
                "key": key,
                "family": rule.family,
                "description": rule.description,
                "lr_range": [float(v) for v in rule.default_lr_range],
            }
            for key, rule in RULES.items()
        ],
        "architectures": [
            {
                "key": key,
                "family": arch.family,
                "layers": arch.layers_description,
                "description": arch.description,
            }
            for key, arch in ARCHITECTURES.items()
        ],
        "tasks": [
            {"key": key, "kind": task.kind, "metric": _task_metric(task), "description": task.description}
            for key, task in TASKS.items()
        ],
        "curricula": [{"key": key, "description": c.description} for key, c in CURRICULA.items()],
        "presets": presets,
        "modalities": _modalities(),
        "classifiers": [{"key": key, "description": spec.description} for key, spec in _classifiers()],
    }


def _modalities() -> list[dict[str, Any]]:
    from advisor.cost import list_modalities, load_modality

    out = []
    for key in list_modalities():
        m = load_modality(key)
        out.append({"key": key, "name": m.name, "observables": list(m.observables), "noise_model": m.noise_model,
                    "max_units": int(m.max_units), "max_sessions": int(m.max_sessions), "description": m.description})
    return out


def _classifiers() -> list[tuple[str, Any]]:
    from advisor.classifiers import CLASSIFIERS

    return CLASSIFIERS.items()


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> Any:
    """A rich table whose last column (free text) wraps; the others (keys, short labels) never do."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", title_style="bold")
    for i, name in enumerate(columns):
        wraps = i == len(columns) - 1
        table.add_column(name, no_wrap=not wraps, overflow="fold", style="cyan" if i == 0 else None)
    for row in rows:
        table.add_row(*row)
    return table


def _fmt_range(lo: float, hi: float) -> str:
    return f"{lo:g} – {hi:g}"


@cli.command()
@common_options
def catalog(app: App) -> None:
    """List rules, architectures, tasks, curricula, presets, recording modalities and classifiers.

    Everything that can be simulated and recorded. The keys in the first column are the names to use in preset
    files and options.
    """
    doc = catalog_document()
    if app.json_output:
        app.consoles.emit_json(doc)
        return
    out = app.consoles.out
    out.print(
        _table(
            "Learning rules",
            ["rule", "family", "default lr range", "description"],
            [[r["key"], r["family"], _fmt_range(*r["lr_range"]), r["description"]] for r in doc["rules"]],
        )
    )
    out.print(
        _table(
            "Architectures",
            ["architecture", "family", "layers"],
            [[a["key"], a["family"], a["layers"]] for a in doc["architectures"]],
        )
    )
    out.print(
        _table(
            "Tasks",
            ["task", "kind", "metric", "description"],
            [[t["key"], t["kind"], t["metric"], t["description"]] for t in doc["tasks"]],
        )
    )
    out.print(
        _table(
            "Curricula",
            ["curriculum", "description"],
            [[c["key"], c["description"]] for c in doc["curricula"]],
        )
    )
    out.print(
        _table(
            "Presets (advisor simulate --preset NAME)",
            ["preset", "networks", "description"],
            [[p["name"], f"{p['n_networks']:,}", p["description"]] for p in doc["presets"]],
        )
    )
    out.print(
        _table(
            "Recording modalities (advisor plan --modality NAME)",
            ["modality", "noise", "max units", "max sessions", "measures"],
            [[m["key"], m["noise_model"], f"{m['max_units']:,}", str(m["max_sessions"]),
              ", ".join(m["observables"])] for m in doc["modalities"]],
        )
    )
    out.print(
        _table(
            "Classifiers (--classifier NAME)",
            ["classifier", "description"],
            [[c["key"], c["description"]] for c in doc["classifiers"]],
        )
    )


# ------------------------------------------------------------------------------------------ simulate
def check_device(device: str) -> None:
    """Raise AdvisorError when ``device`` is ``cuda`` and torch sees no CUDA device."""
    if device != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        raise AdvisorError(
            "--device cuda: no CUDA device is available (torch.cuda.is_available() is False); "
            "use --device cpu"
        )


class _ProgressReporter:
    """The ``progress(done, total, description)`` callback of :func:`simulator.pipeline.simulate`, drawn as
    a rich progress bar (networks done / total, elapsed, ETA) on ``console``, started at the first call that
    finds work left (a cached bank draws no bar)."""

    def __init__(self, console: Console, label: str) -> None:
        self._console = console
        self._label = label
        self._progress: Progress | None = None
        self._task: Any = None

    def __call__(self, done: int, total: int, description: str) -> None:
        if self._progress is None and done >= total:
            return  # complete before it started (a cached bank): nothing to show
        if self._progress is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("networks"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self._console,
            )
            self._progress.start()
            self._task = self._progress.add_task(self._label, total=total)
        self._progress.update(self._task, completed=done, total=total, description=description or self._label)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


@contextmanager
def progress_bar(console: Console, label: str) -> Iterator[_ProgressReporter]:
    """A progress callback drawing on ``console``; the bar is stopped on exit (also after an error)."""
    reporter = _ProgressReporter(console, label)
    try:
        yield reporter
    finally:
        reporter.close()


def _mean_sd(values: pd.Series) -> str:
    import numpy as np

    x = values.to_numpy(dtype=float)
    finite = x[np.isfinite(x)]
    n_bad = x.size - finite.size
    if finite.size == 0:
        text = "—"
    elif finite.size == 1:
        text = f"{finite[0]:.3f}"
    else:
        text = f"{finite.mean():.3f} ± {finite.std(ddof=1):.3f}"
    return text + (f" ({n_bad} non-finite)" if n_bad else "")


def _render_summary(out: Console, config: SimulationConfig, result: SimulationResult) -> None:
    import pandas as pd
    from rich.table import Table

    bank = result.bank
    meta = bank.metadata
    rules = [r for r in config.rules if r in set(meta["rule"])] or sorted(set(meta["rule"]))

    counts = pd.crosstab([meta["architecture"], meta["task"]], meta["rule"])
    counts = counts.reindex(columns=rules, fill_value=0)
    table = Table(title="Networks per rule", title_justify="left", title_style="bold")
    table.add_column("architecture", style="cyan", no_wrap=True)
    table.add_column("task", style="cyan", no_wrap=True)
    for rule in rules:
        table.add_column(rule, justify="right", no_wrap=True)
    table.add_column("total", justify="right", no_wrap=True)
    for (arch, task), row in counts.iterrows():
        table.add_row(arch, task, *(str(int(row[r])) for r in rules), str(int(row.sum())))
    table.add_row(
        "all",
        "",
        *(str(int(counts[r].sum())) for r in rules),
        str(int(counts.to_numpy().sum())),
        style="bold",
    )
    out.print(table)

    perf = Table(title="Final performance, mean ± SD over networks", title_justify="left", title_style="bold")
    for name in ("rule", "task", "metric"):
        perf.add_column(name, style="cyan" if name == "rule" else None, no_wrap=True)
    perf.add_column("networks", justify="right", no_wrap=True)
    perf.add_column("test", justify="right", no_wrap=True)
    perf.add_column("train", justify="right", no_wrap=True)
    perf.add_column("chance", justify="right", no_wrap=True)
    for rule in rules:
        for task, group in meta[meta["rule"] == rule].groupby("task", sort=False):
            metric = ", ".join(sorted(set(map(str, group["metric_name"]))))
            chance = group["chance"].to_numpy(dtype=float)
            perf.add_row(
                rule,
                str(task),
                metric,
                str(len(group)),
                _mean_sd(group["final_test_metric"]),
                _mean_sd(group["final_metric"]),
                f"{chance[0]:.3f}" if chance.size and math.isfinite(chance[0]) else "—",
            )
    out.print(perf)

    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    status = "yes: read from the workspace, nothing simulated" if result.cached else "no: simulated now"
    facts.add_row("preset", config.name)
    facts.add_row("networks", f"{bank.n_networks:,} ({', '.join(rules)})")
    facts.add_row("wall time", f"{result.seconds:.1f} s")
    facts.add_row("bank size", f"{bank.size_bytes() / 2**20:.1f} MiB")
    facts.add_row("bank", str(bank.path))
    facts.add_row("hash", str(bank.hash))
    facts.add_row("cached", status)
    out.print(facts)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


HINT_MIN_CORES = 4
"""From this many usable cores on, a local one-core build says how to use them (on 2 vCPUs, two one-thread
processes were slower than one here: see the README)."""


def _one_core_hint(preset: str) -> str | None:
    cores = usable_cores()
    if cores < HINT_MIN_CORES:
        return None
    return (f"Note: shards train one at a time on one core of this machine's {cores}; `advisor simulate "
            f"--preset {shlex.quote(preset)} --scheduler local:{cores}` (pip install 'lr-advisor[cluster]') trains "
            f"{cores} at once into the same bank")


def build_preset_bank(
    app: App, preset: str, *, seed: int | None = None, device: str = "cpu", scheduler: str | None = None,
    verify: bool = False,
) -> tuple[SimulationConfig, SimulationResult]:
    """Build (or read the cached) bank of ``preset`` in the app's workspace, drawing the progress bar on the
    stderr console. Shared by ``simulate`` and ``evaluate``.

    With a ``scheduler`` (``local:N`` or ``tcp://HOST:PORT``) the shards train on a Dask cluster, whose workers
    check the device; the bank is the same."""
    from simulator.presets import load_preset

    config = load_preset(preset)
    if seed is not None:
        config = config.with_seed(seed)
    if scheduler is None:
        check_device(device)
    workspace = app.open_workspace()

    from simulator.pipeline import CACHED
    from simulator.pipeline import simulate as run_simulation

    workspace.banks.mkdir(parents=True, exist_ok=True)
    with progress_bar(app.consoles.err, f"simulating {config.name}") as bar:
        hint = _one_core_hint(preset) if scheduler is None and device == "cpu" else None

        def progress(done: int, total: int, description: str) -> None:
            nonlocal hint
            if hint is not None and description != CACHED:  # training starts
                app.consoles.err.print(hint, highlight=False, soft_wrap=True, markup=False)
            hint = None
            bar(done, total, description)

        result = run_simulation(config, workspace.banks, device=device, progress=progress, scheduler=scheduler,
                                verify=verify, on_corrupt=lambda m: app.consoles.err.print(
                                    f"Warning: {m}", highlight=False, soft_wrap=True))
    return config, result


@cli.command()
@click.option(
    "--preset",
    default="quick",
    show_default=True,
    metavar="NAME|PATH",
    help="A built-in preset (see `advisor catalog`) or the path of a preset .toml file.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="Override the preset's seed (a non-negative integer).",
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Where networks train.",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="Train the shards on a Dask cluster: local:N starts N worker processes on this machine, "
    "tcp://HOST:PORT uses a running `dask scheduler` (both need the `cluster` extra, dask[distributed]). The "
    "bank is the same as without it [default: train in this process].",
)
@click.option("--verify", is_flag=True,
              help="Check a cached bank's checksums; a corrupt one is reported in one line and rebuilt.")
@click.option("--dry-run", is_flag=True,
              help="Print the shard plan (networks, batched ensembles, networks per ensemble) without training.")
@common_options
def simulate(app: App, preset: str, seed: int | None, device: str, scheduler: str | None, verify: bool,
             dry_run: bool) -> None:
    """Simulate a population of networks into a trajectory bank.

    The bank is stored in the workspace's banks/ folder, content-addressed by the preset's settings: running
    the same preset and seed again reads the cached bank instead of training, and an interrupted run resumes
    where it stopped. With --scheduler, the shards train on a Dask cluster and this process writes the bank.
    Networks of one rule, architecture and task train together as one batched ensemble (shard), whatever their
    curriculum, learning rate, init and (where the rule allows) batch size: --dry-run shows the plan.
    """
    if dry_run:
        _render_shard_plan(app, preset, seed)
        return
    config, result = build_preset_bank(app, preset, seed=seed, device=device, scheduler=scheduler, verify=verify)
    bank = result.bank
    if app.json_output:
        app.consoles.emit_json(
            {
                "bank": str(bank.path),
                "hash": str(bank.hash),
                "n_networks": int(bank.n_networks),
                "rules": list(config.rules),
                "seconds": float(result.seconds),
                "cached": bool(result.cached),
                "size_bytes": int(bank.size_bytes()),
            }
        )
        return
    _render_summary(app.consoles.out, config, result)


def _render_shard_plan(app: App, preset: str, seed: int | None) -> None:
    """``simulate --dry-run``: the shard plan of a preset, computed from its config alone (nothing is trained
    or written; the workspace is not opened)."""
    from simulator.config import shard_summary
    from simulator.presets import load_preset

    config = load_preset(preset)
    if seed is not None:
        config = config.with_seed(seed)
    summary = shard_summary(config)
    if app.json_output:
        app.consoles.emit_json(summary)
        return
    per = summary["networks_per_shard"]
    app.consoles.out.print(
        f"{config.name}: {summary['n_networks']} networks in {summary['n_shards']} batched ensembles "
        f"(networks per ensemble: mean {per['mean']:.1f}, min {per['min']}, max {per['max']}; "
        f"at most {config.max_ensemble})", highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------------------ evaluate
# Kept in step with advisor.protocol / advisor.classifiers / advisor.evaluation (tests check it); spelled out here
# because importing those modules would load torch and scikit-learn at start-up.
OBSERVABLE_CHOICES = ("weights", "activations", "activity_change")
NOISE_MODEL_CHOICES = ("none", "gaussian", "poisson")
CLASSIFIER_CHOICES = ("rf", "svm", "ridge", "lda", "logreg", "gbt", "conv1d")
HELDOUT_CHOICES = ("none", "architecture", "arch_family", "task", "nonlinearity")
STATISTICS_CHOICES = ("marginal", "population", "both")
LAYER_GROUPS = ("early", "middle", "deep")
TOP_FEATURES = 8
TOP_SESSIONS = 3


def parse_window(text: str) -> tuple[float, float]:
    """``"0-0.3"`` → (0.0, 0.3). AdvisorError naming the value and the allowed form if it does not parse;
    the range itself is checked by the protocol."""
    parts = text.strip().split("-")
    try:
        if len(parts) != 2:
            raise ValueError(text)
        lo, hi = (float(part) for part in parts)
    except ValueError:
        raise AdvisorError(
            f"--window must be START-END fractions of training with 0 <= START < END <= 1 (e.g. 0-0.3); "
            f"got {text!r}"
        ) from None
    return lo, hi


def parse_list(text: str) -> tuple[str, ...]:
    """A comma list: items stripped, empties dropped, duplicates dropped (first kept)."""
    items = [item.strip() for item in text.split(",")]
    return tuple(dict.fromkeys(item for item in items if item))


def _check_stratified_splits(y: Sequence[str], target: str) -> None:
    """AdvisorError (instead of scikit-learn's ValueError) when stratified 4-fold splits cannot test every
    network: each label needs at least 4 networks."""
    from advisor.evaluation import FOLDS

    counts = {label: list(y).count(label) for label in sorted(set(y))}
    few = min(counts, key=lambda label: counts[label])
    if counts[few] < FOLDS:
        raise AdvisorError(
            f"{len(y)} networks are too few for stratified {FOLDS}-fold splits over {len(counts)} {target}s: "
            f"{target} {few!r} has {counts[few]}, each needs at least {FOLDS}; simulate more networks per rule"
        )


def parse_gain_sd(text: str) -> tuple[float, float, float]:
    """``"0.5,0.3,0.5"`` → (0.5, 0.3, 0.5): the SDs of the log gain per animal, area and unit. AdvisorError
    naming the value and the allowed form if it does not parse; the values are checked by the protocol."""
    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) != 3:
            raise ValueError(text)
        animal, area, unit = (float(p) for p in parts)
    except ValueError:
        raise AdvisorError(
            f"--gain-sd must be ANIMAL,AREA,UNIT: three SDs of the log gain, each in [0, 3] (0,0,0 turns gains "
            f"off); got {text!r}"
        ) from None
    return animal, area, unit


def _ci_text(ci: tuple[float, float]) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _protocol_document(protocol: Any) -> dict[str, Any]:
    return {
        "observable": protocol.observable,
        "n_units": int(protocol.n_units),
        "layers": list(protocol.layers),
        "n_sessions": int(protocol.n_sessions),
        "window": [float(v) for v in protocol.window],
        "noise_model": protocol.noise_model,
        "noise": float(protocol.noise),
        "chronic": bool(protocol.chronic),
        "n_probes": None if protocol.n_probes is None else int(protocol.n_probes),
        "seed": int(protocol.seed),
        "gain_sd": [float(v) for v in protocol.gain_sd],
        "baseline": float(protocol.baseline),
    }


@cli.command()
@click.option(
    "--preset",
    default=None,
    show_default="quick",
    metavar="NAME|PATH",
    help="Evaluate the bank of this preset (built, or read from the workspace if cached).",
)
@click.option(
    "--bank",
    "bank_dir",
    type=click.Path(path_type=Path),
    default=None,
    metavar="PATH",
    help="Evaluate this bank directory instead of a preset's (not with --preset).",
)
@click.option("--observable", type=click.Choice(OBSERVABLE_CHOICES), default="activations", show_default=True,
              help="What is recorded.")
@click.option("--units", type=click.IntRange(min=1), default=100, show_default=True, metavar="N",
              help="Units (synapses, for weights) recorded per network, split evenly over the layer groups.")
@click.option("--sessions", type=click.IntRange(min=1), default=10, show_default=True, metavar="S",
              help="Recording sessions over learning.")
@click.option("--noise", type=float, default=0.0, show_default=True, metavar="X",
              help="Noise level (gaussian: SD relative to the spread; poisson: mean spikes per stimulus).")
@click.option("--noise-model", type=click.Choice(NOISE_MODEL_CHOICES), default="gaussian", show_default=True,
              help="Measurement noise model.")
@click.option("--layers", default=None, metavar="LIST",
              help="Layer groups recorded, a comma list of early, middle, deep [default: all].")
@click.option("--window", default=None, metavar="START-END",
              help="Fractions of training the sessions are spread over, e.g. 0-0.3 [default: 0-1].")
@click.option("--acute", is_flag=True, help="Record fresh units every session (default: chronic, the same units).")
@click.option("--probes", type=click.IntRange(min=1), default=None, metavar="N",
              help="Probe stimuli shown per session [default: every probe in the bank].")
@click.option("--gain-sd", "gain_sd_text", default=None, metavar="ANIMAL,AREA,UNIT",
              help="SDs of the log of the unknown gain per animal, area (layer group) and unit; 0,0,0 turns gains "
                   "off [default: 0.5,0.3,0.5, the generic modality's].")
@click.option("--baseline", type=float, default=0.0, show_default=True, metavar="B",
              help="Unknown baseline: gaussian, SD of each unit's offset in units of its spread; poisson, the "
                   "spontaneous rate as a fraction of the mean evoked rate.")
@click.option("--classifier", type=click.Choice(CLASSIFIER_CHOICES), default="svm", show_default=True,
              help="Classifier that identifies the rule.")
@click.option("--heldout", type=click.Choice(HELDOUT_CHOICES), default="none", show_default=True,
              help="none: repeated stratified 4-fold splits (75/25); architecture, arch_family (mlp/conv), task, "
                   "nonlinearity (relu/tanh): leave one out at a time.")
@click.option("--statistics", type=click.Choice(STATISTICS_CHOICES), default="marginal", show_default=True,
              help="marginal: the paper's 21 statistics of each group's values; population: gain-invariant "
                   "statistics of the recorded population (dimensionality, correlations, sparseness, drift); "
                   "both.")
@click.option("--augment", type=int, default=1, show_default=True, metavar="K",
              help="Train on K virtual recordings of every training network (other units, gains and noise); "
                   "test networks are recorded once.")
@click.option("--rules", "rules_text", default=None, metavar="LIST",
              help="Only these rules, a comma list (e.g. sgdm,fa) [default: every rule in the bank].")
@click.option("--family", is_flag=True, help="Identify rule families instead of rules.")
@click.option("--splits", type=click.IntRange(min=1), default=10, show_default=True, metavar="N",
              help="Train/test splits (with --heldout none), rounded up to whole repeats of a 4-fold split.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Seed of the recording (units, noise) and of the splits and classifiers.")
@common_options
def evaluate(
    app: App,
    preset: str | None,
    bank_dir: Path | None,
    observable: str,
    units: int,
    sessions: int,
    noise: float,
    noise_model: str,
    layers: str | None,
    window: str | None,
    acute: bool,
    probes: int | None,
    gain_sd_text: str | None,
    baseline: float,
    classifier: str,
    heldout: str,
    statistics: str,
    augment: int,
    rules_text: str | None,
    family: bool,
    splits: int,
    seed: int,
) -> None:
    """Identify the learning rule from a recording protocol's statistics.

    Records every network of a bank under the protocol the options describe (no re-simulation; unknown gains
    per animal, area and unit as a rig has them), computes the unit statistics per layer group and session, and
    scores a classifier on splits over networks, next to the two controls an experimenter gets for free: the
    whole learning curve (behaviour) and the hyperparameters alone, each the better of a linear and a nonlinear
    classifier. The rule counts as identified only where the accuracy's CI clears the strongest control's.
    """
    if bank_dir is not None and preset is not None:
        raise click.UsageError("--bank and --preset are mutually exclusive: give one")
    if isinstance(augment, bool) or augment < 1:
        raise AdvisorError(f"--augment must be a positive integer (virtual recordings per training network); "
                           f"got {augment}")
    from advisor.protocol import DEFAULT_GAIN_SD, RecordingProtocol

    protocol = RecordingProtocol(
        observable=observable,
        n_units=units,
        layers=parse_list(layers) if layers is not None else LAYER_GROUPS,
        n_sessions=sessions,
        window=parse_window(window) if window is not None else (0.0, 1.0),
        noise_model=noise_model,
        noise=noise,
        chronic=not acute,
        n_probes=probes,
        seed=seed,
        gain_sd=parse_gain_sd(gain_sd_text) if gain_sd_text is not None else DEFAULT_GAIN_SD,
        baseline=baseline,
        statistics=statistics,
    )
    wanted = parse_list(rules_text) if rules_text is not None else None
    if wanted is not None and not wanted:
        raise AdvisorError("--rules must name at least one rule (a comma list, e.g. sgdm,fa)")

    if bank_dir is not None:
        from simulator.bank import load_bank

        bank = load_bank(bank_dir)
    else:
        bank = build_preset_bank(app, preset or "quick")[1].bank

    import numpy as np

    meta = bank.metadata.reset_index(drop=True)
    in_bank = sorted(set(meta["rule"].astype(str)))
    keep = np.ones(len(meta), dtype=bool)
    if wanted is not None:
        unknown = [r for r in wanted if r not in in_bank]
        if unknown:
            raise AdvisorError(
                f"--rules: {', '.join(unknown)} not in the bank; its rules are {', '.join(in_bank)}"
            )
        keep = meta["rule"].astype(str).isin(wanted).to_numpy()

    from advisor.controls import behaviour_features
    from advisor.evaluation import evaluate as run_evaluation
    from advisor.features import augmented_features, featurize

    target = "family" if family else "rule"
    meta = meta[keep].reset_index(drop=True)
    if heldout == "none":  # before the (slow) recording: scikit-learn would fail later with a ValueError
        _check_stratified_splits(list(meta[target].astype(str)), target)
    with app.consoles.err.status("recording and computing features", spinner="dots"):
        features = featurize(bank, protocol)
        extra = [x[keep] for x in augmented_features(bank, protocol, augment)]
    X, curve = features.X[keep], behaviour_features(bank, np.flatnonzero(keep))
    with app.consoles.err.status(f"evaluating {classifier} and the controls on {len(meta)} networks",
                                 spinner="dots"):
        result = run_evaluation(
            X, curve, meta, target=target, classifier=classifier, heldout=heldout, n_splits=splits, seed=seed,
            importances=True, augment=extra,
        )

    from advisor.controls import CONTROL_LABELS, controls_document

    scores, control = result.scores, result.control
    top_features: list[tuple[str, float]] = []
    top_sessions: list[tuple[int, float]] = []
    if scores.feature_importance is not None and scores.session_importance is not None:
        per_feature = dict(zip(features.names, (float(v) for v in scores.feature_importance), strict=True))
        top_features = sorted(per_feature.items(), key=lambda kv: kv[1], reverse=True)[:TOP_FEATURES]
        per_session = np.asarray(scores.session_importance, dtype=float)
        order = np.argsort(-per_session, kind="stable")[:TOP_SESSIONS]
        top_sessions = [(int(features.sessions[i]), float(per_session[i])) for i in order]
    beyond = result.beyond_controls
    top = result.strongest_control
    top_name = CONTROL_LABELS.get(top.name, top.name) if top is not None else "none"
    verdict = (f"identified beyond the strongest control ({top_name})" if beyond
               else f"not distinguishable from the strongest control ({top_name})")
    nonfinite = int(features.nan_report.n_nonfinite)

    if app.json_output:
        app.consoles.emit_json(
            {
                "accuracy": float(scores.accuracy),
                "ci": [float(v) for v in scores.ci],
                "balanced_accuracy": float(scores.balanced_accuracy),
                "chance": float(result.chance),
                "control_accuracy": float(control.accuracy) if control is not None else None,
                "control_ci": [float(v) for v in control.ci] if control is not None else None,
                "controls": controls_document(result.controls),
                "strongest_control": top.name if top is not None else None,
                "ci_method": scores.ci_method,
                "beyond_control": bool(beyond),
                "verdict": verdict,
                "confusion_matrix": np.asarray(scores.confusion_matrix).astype(int).tolist(),
                "labels": list(result.labels),
                "n_networks": int(result.n_networks),
                "protocol": _protocol_document(protocol),
                "protocol_description": protocol.describe(),
                "classifier": classifier,
                "heldout": heldout,
                "statistics": statistics,
                "augment": augment,
                "target": target,
                "n_splits": len(scores.split_accuracies),
                "sessions": [int(s) for s in features.sessions],
                "top_features": [{"name": n, "importance": v} for n, v in top_features],
                "top_sessions": [{"checkpoint": c, "importance": v} for c, v in top_sessions],
                "nonfinite": nonfinite,
            }
        )
        return
    _render_evaluation(app.consoles.out, protocol, result, verdict, top_features, top_sessions, features)


def _render_evaluation(
    out: Console,
    protocol: Any,
    result: Any,
    verdict: str,
    top_features: list[tuple[str, float]],
    top_sessions: list[tuple[int, float]],
    features: Any,
) -> None:
    from rich.table import Table

    from advisor.controls import CONTROL_LABELS

    scores = result.scores
    out.print(f"[bold]Protocol[/bold]: {protocol.describe()}", highlight=False)
    out.print(
        f"[bold]Classifier[/bold]: {result.classifier} · [bold]held out[/bold]: {result.heldout} · "
        f"[bold]networks[/bold]: {result.n_networks} · [bold]splits[/bold]: {len(scores.split_accuracies)}",
        highlight=False,
    )

    table = Table(title="Identification", title_justify="left", title_style="bold")
    table.add_column("measure", style="cyan", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("95% CI", justify="right", no_wrap=True)
    table.add_row("accuracy", f"{scores.accuracy:.3f}", _ci_text(scores.ci))
    table.add_row("balanced accuracy", f"{scores.balanced_accuracy:.3f}", "")
    table.add_row("chance", f"{result.chance:.3f}", "")
    for name, entry in result.controls.items():
        table.add_row(f"control: {CONTROL_LABELS.get(name, name)}, {entry.classifier}",
                      f"{entry.scores.accuracy:.3f}", _ci_text(entry.scores.ci))
    out.print(table)
    out.print(f"[bold]Verdict[/bold]: {verdict}", highlight=False)

    cm = Table(title="Confusion matrix", title_justify="left", title_style="bold")
    cm.add_column("true \\ predicted", style="cyan", no_wrap=True)
    for label in result.labels:
        cm.add_column(label, justify="right", no_wrap=True)
    for label, row in zip(result.labels, scores.confusion_matrix, strict=True):
        cm.add_row(label, *(str(int(v)) for v in row))
    out.print(cm)

    if top_features:
        feats = Table(title=f"Top {len(top_features)} features",
                      title_justify="left", title_style="bold")
        feats.add_column("feature", style="cyan", no_wrap=True)
        feats.add_column("importance (channel permuted)", justify="right", no_wrap=True)
        for name, value in top_features:
            feats.add_row(name, f"{value:.4f}")
        out.print(feats)
    if top_sessions:
        sess = Table(title="Most informative sessions",
                     title_justify="left", title_style="bold")
        sess.add_column("session", style="cyan", justify="right", no_wrap=True)
        sess.add_column("checkpoint", justify="right", no_wrap=True)
        sess.add_column("importance (session permuted)", justify="right", no_wrap=True)
        positions = {int(c): i for i, c in enumerate(features.sessions)}
        for checkpoint, value in top_sessions:
            sess.add_row(str(positions[checkpoint] + 1), str(checkpoint), f"{value:.4f}")
        out.print(sess)

    report = features.nan_report
    if report.n_nonfinite:
        worst = sorted(report.by_feature.items(), key=lambda kv: kv[1], reverse=True)[:3]
        detail = ", ".join(f"{name} ({count})" for name, count in worst)
        out.print(
            f"Note: {report.n_nonfinite} of {report.n_values} feature values were non-finite "
            f"(policy: {getattr(report.policy, 'value', report.policy)})"
            + (f" (most: {detail})" if detail else ""),
            highlight=False,
        )


# ------------------------------------------------------------------------------------------ plan and friends
# ``plan``, ``compare``, ``worker``, ``runs`` and ``report`` live in advisor.cli_plan, which imports this module's
# helpers and registers its commands on ``cli`` when it finishes loading (whichever module is imported first).
import advisor.cli_plan  # noqa: E402, F401
