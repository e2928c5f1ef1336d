"""What every command shares: the one-line error policy, the :class:`App` of the shared options (declared
once, as decorators), opening or building a bank, the progress bars, and the option choices and parsers."""

from __future__ import annotations

import errno
import functools
import os
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from advisor.application.console import Consoles
from advisor.application.workspace import ENV_VAR, Workspace
from advisor.errors import AdvisorError
from simulator.text import one_line

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from simulator.bank import TrajectoryBank
    from simulator.config import SimulationConfig
    from simulator.pipeline import SimulationResult


EXIT_USAGE = 2


"""Exit code of every user error (bad option, bad preset, bad workspace, ...)."""


EXIT_INTERRUPTED = 130


"""Exit code after Ctrl-C (128 + SIGINT), as shells report it."""


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
    click.echo(f"Error: {one_line(message)}", err=True)


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


def check_device(device: str) -> None:
    """A one-line ConfigError when ``device`` is ``cuda`` and torch sees no CUDA device (the simulator's own
    check, :func:`simulator.device.resolve_device`, run before the bank is opened)."""
    if device == "cuda":
        from simulator.device import resolve_device

        resolve_device(device)


PLAIN_INTERVAL_S = 15.0
"""Off a terminal (nohup, a batch scheduler, CI), a progress line is written at most this often per stage."""


def _clock_text(seconds: float) -> str:
    """Seconds as H:MM:SS (rich's elapsed-time format)."""
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class _PlainLines:
    """Progress as plain lines, for a console that is not a terminal: one when a stage starts, then at most
    every :data:`PLAIN_INTERVAL_S` (done/total, elapsed, ETA), and one when it finishes."""

    def __init__(self, console: Console, unit: str | None, clock: Callable[[], float]) -> None:
        self._console, self._unit, self._clock = console, unit, clock
        self._label: str | None = None
        self._detail = ""  # what the stage is doing now (the shard training), after the counts
        self._done = self._total = 0
        self._started_at = self._printed_at = 0.0
        self._finished = True

    def _say(self, text: str) -> None:
        self._console.print(text, highlight=False, markup=False, soft_wrap=True)

    def _counts(self) -> str:
        return f"{self._done}/{self._total}" + (f" {self._unit}" if self._unit else "")

    def _now_doing(self, last: bool = False) -> str:
        if not self._detail or self._detail == self._label:
            return ""
        return f" (last: {self._detail})" if last else f" ({self._detail})"

    def _line(self) -> None:
        elapsed = self._clock() - self._started_at
        eta = (_clock_text(elapsed / self._done * (self._total - self._done)) if self._done else "?")
        self._say(f"{self._label}: {self._counts()}, {_clock_text(elapsed)} elapsed, ETA {eta}{self._now_doing()}")
        self._printed_at = self._clock()

    def begin(self, label: str, total: int) -> None:
        self.finish()
        self._label, self._detail, self._done, self._total, self._finished = label, "", 0, max(1, total), False
        self._started_at = self._clock()
        self._line()

    def update(self, done: int, total: int, detail: str = "") -> None:
        if self._finished:
            return
        self._done, self._total = done, max(1, total)
        self._detail = detail or self._detail
        if self._done >= self._total:
            self.finish()
        elif self._clock() - self._printed_at >= PLAIN_INTERVAL_S:
            self._line()

    def advance(self) -> None:
        self.update(self._done + 1, self._total)

    def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        elapsed = _clock_text(self._clock() - self._started_at)
        if self._done >= self._total:
            self._say(f"{self._label}: {self._counts()}, done in {elapsed}{self._now_doing(last=True)}")
        else:
            self._say(f"{self._label}: stopped at {self._counts()} after {elapsed}")


class ProgressBar:
    """The one progress bar of the command line, on ``console`` (stderr), started on first use: a rich bar on a
    terminal, plain lines off one (:class:`_PlainLines`: where nobody watches, a log still shows the progress).

    Two ways to drive it:

    * as the ``progress(done, total, description)`` callback of :func:`simulator.pipeline.simulate`
      (``unit="networks"``: networks done / total, elapsed, ETA); a call that finds the work already done
      before the bar started (a cached bank) draws nothing;
    * stage by stage (``start(label, total)``, ``advance()``): one row per stage of a plan (the search, the
      re-check, the set-aside test, the curves), the previous stage shown complete when the next starts.
    """

    def __init__(self, console: Console, label: str = "", unit: str | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        import time

        self._console = console
        self._label = label
        self._unit = unit
        self._progress: Progress | None = None
        self._task: Any = None
        self._plain = None if console.is_terminal else _PlainLines(console, unit, clock or time.monotonic)
        self._plain_started = False

    def _started(self) -> Progress:
        if self._progress is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            columns: list[Any] = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
            if self._unit:
                columns += [TextColumn(self._unit), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
            else:
                columns.append(TimeElapsedColumn())
            self._progress = Progress(*columns, console=self._console, transient=False)
            self._progress.start()
        return self._progress

    def __call__(self, done: int, total: int, description: str) -> None:
        if self._plain is not None:
            if not self._plain_started:
                if done >= total:
                    return  # a cached bank: nothing to show
                self._plain_started = True
                self._plain.begin(self._label, total)
            self._plain.update(done, total, description)
            return
        if self._progress is None and done >= total:
            return  # complete before it started (a cached bank): nothing to show
        progress = self._started()
        if self._task is None:
            self._task = progress.add_task(self._label, total=total)
        progress.update(self._task, completed=done, total=total, description=description or self._label)

    def start(self, label: str, total: int) -> None:
        if self._plain is not None:
            self._plain.begin(label, total)
            return
        progress = self._started()
        if self._task is not None:
            progress.update(self._task, completed=progress.tasks[-1].total)
        self._task = progress.add_task(label, total=max(1, total))

    def advance(self) -> None:
        if self._plain is not None:
            self._plain.advance()
            return
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task)

    def close(self) -> None:
        if self._plain is not None:
            self._plain.finish()
        if self._progress is not None:
            self._progress.stop()


@contextmanager
def progress_bar(console: Console, label: str = "", unit: str | None = None) -> Iterator[ProgressBar]:
    """A :class:`ProgressBar` on ``console``, stopped on exit (also after an error)."""
    bar = ProgressBar(console, label, unit)
    try:
        yield bar
    finally:
        bar.close()


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


def _announce_build(app: App, config: SimulationConfig, banks: Path, *, local_cpu: bool) -> None:
    """Say what is about to be built, and where, before a build starts (a mistyped workspace must not start a
    silent build): networks, size and, for a local CPU build, the expected time. Nothing for a cached bank."""
    from simulator.bank import bank_is_complete
    from simulator.pipeline import bank_path, build_estimate

    path = bank_path(config, banks)
    if bank_is_complete(path, config.content_hash()):
        return
    size, seconds = build_estimate(config)
    parts = [f"{config.n_networks:,} networks"]
    if local_cpu:
        minutes = round(seconds / 60)
        parts.append(("under a minute" if minutes < 1 else f"about {minutes} minute{'s' if minutes != 1 else ''}")
                     + " on a 2-core CPU")
    mib = size / 2**20
    parts.append(f"{size / 2**10:,.0f} KiB" if mib < 1 else f"{mib:,.1f} MiB" if mib < 10 else f"{mib:,.0f} MiB")
    app.consoles.err.print(f"building the {config.name} bank ({', '.join(parts)}) in {path.parent}",
                           highlight=False, soft_wrap=True, markup=False)


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
    local_cpu = scheduler is None and device == "cpu"
    with progress_bar(app.consoles.err, f"simulating {config.name}", unit="networks") as bar:
        first = True

        def progress(done: int, total: int, description: str) -> None:
            nonlocal first
            if first and description != CACHED:  # training starts (the options have been checked)
                _announce_build(app, config, workspace.banks, local_cpu=local_cpu)
                hint = _one_core_hint(preset) if local_cpu else None
                if hint is not None:
                    app.consoles.err.print(hint, highlight=False, soft_wrap=True, markup=False)
            first = False
            bar(done, total, description)

        result = run_simulation(config, workspace.banks, device=device, progress=progress, scheduler=scheduler,
                                verify=verify, on_corrupt=lambda m: app.consoles.err.print(
                                    f"Warning: {m}", highlight=False, soft_wrap=True))
    return config, result


# Kept in step with advisor.science.protocol / advisor.science.classifiers / advisor.science.evaluation (tests check
# it); spelled out here
# because importing those modules would load torch and scikit-learn at start-up.
OBSERVABLE_CHOICES = ("weights", "activations", "activity_change")
NOISE_MODEL_CHOICES = ("none", "gaussian", "poisson")


CLASSIFIER_CHOICES = ("rf", "svm", "ridge", "lda", "logreg", "gbt", "conv1d")
HELDOUT_CHOICES = ("none", "architecture", "arch_family", "task", "nonlinearity")


STATISTICS_CHOICES = ("marginal", "population", "both")


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


def ci_text(ci: tuple[float, float]) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


tracking_uri_option = click.option(
    "--tracking-uri", default=None, metavar="URI", envvar="MLFLOW_TRACKING_URI",
    help="MLflow tracking URI [default: sqlite store in WORKSPACE/mlflow].")
"""``--tracking-uri`` (else ``$MLFLOW_TRACKING_URI``), declared once for every command that reads or writes runs."""


def check_bank_or_preset(bank_dir: Path | None, preset: str | None) -> None:
    """A usage error when both ``--bank`` and ``--preset`` are given (the one home of that check)."""
    if bank_dir is not None and preset is not None:
        raise click.UsageError("--bank and --preset are mutually exclusive: give one")


def open_bank(app: App, preset: str | None, bank_dir: Path | None) -> tuple[TrajectoryBank, str | None]:
    """The bank at ``--bank``, or the (cached or built) bank of ``--preset`` (default ``quick``), with the
    preset's name (None for ``--bank``)."""
    check_bank_or_preset(bank_dir, preset)
    if bank_dir is not None:
        from simulator.bank import load_bank

        return load_bank(bank_dir), None
    return build_preset_bank(app, preset or "quick")[1].bank, preset or "quick"


def parse_rules(rules_text: str | None) -> tuple[str, ...] | None:
    """``--rules``: None when not given, else a non-empty comma list of known rules (AdvisorError for an empty
    list or an unknown rule, checked against the rule registry before any bank is built; whether the bank has
    them is checked once it is open)."""
    if rules_text is None:
        return None
    rules = parse_list(rules_text)
    if not rules:
        raise AdvisorError("--rules must name at least one rule (a comma list, e.g. sgdm,fa)")
    from simulator.rules import RULES  # before any bank is opened or built: a typo costs no simulation
    from simulator.text import did_you_mean

    for rule in rules:
        if rule not in RULES:
            raise AdvisorError(f"--rules: unknown rule {rule!r}{did_you_mean(rule, RULES)}; allowed: "
                               f"{', '.join(sorted(RULES))}")
    return rules


def open_tracker(app: App, tracking_uri: str | None) -> Any:
    from advisor.application.tracking import Tracker

    tracker = Tracker(app.open_workspace(), tracking_uri)
    tracker.check()
    return tracker


def load_plan_run(app: App, run_id: str, tracking_uri: str | None, option: str = "--run"
                  ) -> tuple[Any, Any, TrajectoryBank]:
    """A finished plan's run summary, its document (paths rebased onto the workspace in use) and its bank, checked
    to be the plan's (``evaluate --run``, ``export``, ``identify --run``).

    Raises:
        AdvisorError: the id is unknown or ambiguous, the run is not a finished plan, or its bank is missing or
            not the plan's.
    """
    from advisor.application.workspace import relocate_document

    tracker = open_tracker(app, tracking_uri)
    summary = tracker.get_run(run_id)
    if summary.kind != "plan" or not summary.summary:
        what = {"compare": "a comparison", "identify": "an identify run"}.get(
            summary.kind, f"a run with no summary (status {summary.status})")
        raise AdvisorError(f"{option} {run_id}: {what}; give the id of a finished plan (`advisor runs list`)")
    doc = relocate_document(summary.summary, app.open_workspace().root)
    path = Path(doc["bank"]["path"])
    if not (path / "manifest.json").is_file():
        raise AdvisorError(f"{option} {run_id}: the plan's bank {path} is missing; simulate it again (advisor "
                           f"simulate --preset {doc['bank'].get('preset') or 'NAME'}) or restore the folder")
    bank, _ = open_bank(app, None, path)
    if bank.hash != doc["bank"]["hash"]:
        raise AdvisorError(f"{option} {run_id}: the bank at {bank.path} is {bank.hash[:12]}, not the plan's "
                           f"{doc['bank']['hash'][:12]}")
    return summary, doc, bank


def finish_run(app: App, run: Any, tracker: Any, doc: Any, out_dir: Path) -> dict[str, str]:
    """The end of a plan's, comparison's or identification's run: write the reports into ``out_dir``, log the
    figures and reports as artifacts, store the document (``summary.json``) and the recommendation tag; return
    the report paths."""
    from advisor.application.reports import make_figures, write_reports
    from advisor.application.tracking import RECOMMENDATION_TAG, recommendation_tag

    doc["run_id"] = run.run_id
    doc["workspace"] = str(app.open_workspace().root)  # where its paths point: runs show rebases a moved one
    doc["tracking_uri"] = tracker.uri
    doc["run_url"] = tracker.run_url(run.run_id)
    with app.consoles.err.status("writing reports", spinner="dots"):
        paths = write_reports(doc, out_dir)
        reports = {fmt: str(path) for fmt, path in paths.items()}
        doc["reports"] = reports
        for name, fig in make_figures(doc).items():
            run.log_figure(fig, f"figures/{name}.png")
        for path in paths.values():
            run.log_artifact(str(path), "reports")
        run.log_dict(doc, "summary.json")
        tag = recommendation_tag(doc)
        if tag is not None:
            run.set_tags({RECOMMENDATION_TAG: tag})
    return reports


def command_line(ctx: click.Context) -> str:
    """The command as typed, rebuilt from its arguments and the options that differ from their defaults (for
    reproducing a plan, comparison or identification)."""
    parts = [ctx.command_path]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if isinstance(param, click.Argument):
            values = value if isinstance(value, tuple | list) else (value,)
            parts += [shlex.quote(str(v)) for v in values if v is not None]
            continue
        if not isinstance(param, click.Option) or param.name in ("json_output", "workspace"):
            continue
        if value is None or value == param.default or (param.is_flag and not value):
            continue
        flag = param.opts[0]
        parts.append(flag if param.is_flag else f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)
