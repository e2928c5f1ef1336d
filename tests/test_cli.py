"""The `advisor` command line: help, catalog, simulate, the one-line error policy, workspace, lazy imports."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cli_helpers import assert_one_error_line
from click.testing import CliRunner, Result
from rich.console import Console

from advisor.application.console import Consoles
from advisor.application.workspace import Workspace
from advisor.cli import COMMANDS, cli
from advisor.cli.app import ProgressBar
from advisor.errors import AdvisorError
from simulator.errors import ConfigError
from simulator.networks import ARCHITECTURES
from simulator.rules import RULES
from simulator.tasks import CURRICULA, TASKS

if TYPE_CHECKING:
    from simulator.pipeline import SimulationResult


def _consoles(width: int = 200) -> tuple[Consoles, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    consoles = Consoles(out=Console(file=out, width=width), err=Console(file=err, width=width))
    return consoles, out, err


def _invoke(args: list[str], **kwargs: object) -> Result:
    return CliRunner().invoke(cli, args, catch_exceptions=False, **kwargs)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- help
def _leaf_commands() -> list[list[str]]:
    """Every command a user runs, as its argv prefix: each of :data:`COMMANDS`, and each subcommand of a group
    (``runs list``, ``runs show``), read from the group itself so that a new command is covered unasked."""
    import click

    from advisor.cli import LazyGroup

    group = cli
    assert isinstance(group, LazyGroup)
    leaves = []
    for name in COMMANDS:
        command = group.get_command(click.Context(group), name)
        if isinstance(command, click.Group):
            leaves += [[name, sub] for sub in sorted(command.commands)]
        else:
            leaves.append([name])
    return leaves


LEAVES = _leaf_commands()
LEAF_IDS = [" ".join(c) for c in LEAVES]


@pytest.mark.parametrize("args", [[], *LEAVES], ids=["advisor", *LEAF_IDS])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_exits_zero(args: list[str], flag: str) -> None:
    result = _invoke([*args, flag])
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: advisor")
    assert result.stderr == ""


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_group_help_lists_the_commands(name: str) -> None:
    out = _invoke(["--help"]).stdout
    assert f"\n  {name} " in out


def test_the_command_table_matches_the_group() -> None:
    """Every command in the lazy table resolves to a click command of that name, and nothing else is listed."""
    import click

    assert cli.list_commands(click.Context(cli)) == sorted(COMMANDS)
    for name in COMMANDS:
        command = cli.get_command(click.Context(cli), name)
        assert isinstance(command, click.Command) and command.name == name


@pytest.mark.parametrize("args", LEAVES, ids=LEAF_IDS)
def test_every_command_has_the_shared_options(args: list[str]) -> None:
    out = _invoke([*args, "--help"]).stdout
    assert "--workspace DIR" in out and "--json" in out and "ADVISOR_WORKSPACE" in out


def test_version() -> None:
    result = _invoke(["--version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("advisor, version ")


def test_bare_advisor_shows_the_help_on_stderr() -> None:
    result = _invoke([])
    assert result.exit_code == 2  # click's convention for a group called without a command
    assert result.stderr.startswith("Usage: advisor")


@pytest.mark.parametrize("args", [["--help"], *[[*c, "--help"] for c in LEAVES]], ids=["advisor", *LEAF_IDS])
def test_help_does_not_import_heavy_libraries(args: list[str]) -> None:
    code = (
        "import sys\n"
        "from advisor.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "heavy = ['torch', 'mlflow', 'optuna', 'sklearn', 'matplotlib']\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert proc.stdout.strip().splitlines()[-1] == "[]"


# ----------------------------------------------------------------------------------------------- catalog
def test_catalog_table_lists_every_rule_and_family() -> None:
    consoles, out, err = _consoles()
    result = _invoke(["catalog"], obj=consoles)
    assert result.exit_code == 0
    text = out.getvalue()
    for key, rule in RULES.items():
        assert key in text and rule.family in text
    for key in (*ARCHITECTURES, *TASKS, *CURRICULA, "quick", "standard", "tiny", "paper", "families"):
        assert key in text
    assert "1,056" in text  # the paper preset's networks
    assert err.getvalue() == ""


def test_catalog_on_a_narrow_default_console_keeps_keys_whole() -> None:
    result = _invoke(["catalog"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    for key, rule in RULES.items():
        assert key in result.stdout and rule.family in result.stdout


def test_simulate_dry_run_prints_the_shard_plan_and_trains_nothing(tmp_path: Path) -> None:
    from simulator.config import plan_shards, sample_population
    from simulator.presets import load_preset

    result = _invoke(["simulate", "--preset", "paper", "--dry-run", "--json", "--workspace", str(tmp_path)])
    assert result.exit_code == 0, result.output
    config = load_preset("paper")
    sizes = [len(s.networks) for s in plan_shards(config, sample_population(config))]
    assert json.loads(result.stdout) == {"n_networks": 1056, "n_shards": len(sizes), "networks_per_shard": {
        "mean": round(1056 / len(sizes), 3), "min": min(sizes), "max": max(sizes)}}
    assert len(sizes) == 96 and sum(sizes) / len(sizes) >= 8  # batch sizes mixed (the preset asks for it)
    assert list(tmp_path.iterdir()) == []  # nothing trained, nothing written
    text = _invoke(["simulate", "--preset", "quick", "--dry-run", "--workspace", str(tmp_path)])
    assert text.exit_code == 0
    assert text.stdout.startswith("quick: 256 networks in 64 batched ensembles (networks per ensemble: mean 4.0")


def test_catalog_json() -> None:
    result = _invoke(["catalog", "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert set(doc) == {"rules", "architectures", "tasks", "curricula", "presets", "modalities", "classifiers"}
    from advisor.science.classifiers import CLASSIFIERS
    from advisor.science.cost import list_modalities

    assert [m["key"] for m in doc["modalities"]] == list_modalities()
    assert [c["key"] for c in doc["classifiers"]] == CLASSIFIERS.keys()
    assert next(m for m in doc["modalities"] if m["key"] == "ephys")["observables"] == ["activations"]
    assert [r["key"] for r in doc["rules"]] == list(RULES) and len(doc["rules"]) == 11
    assert [a["key"] for a in doc["architectures"]] == list(ARCHITECTURES) and len(doc["architectures"]) == 8
    assert {t["key"] for t in doc["tasks"]} == set(TASKS)
    assert {c["key"] for c in doc["curricula"]} == set(CURRICULA)
    sgdm = next(r for r in doc["rules"] if r["key"] == "sgdm")
    assert set(sgdm) == {"key", "family", "description", "lr_range"}
    assert sgdm["family"] == "backprop"
    assert sgdm["lr_range"] == list(RULES.get("sgdm").default_lr_range)
    assert set(doc["architectures"][0]) == {"key", "family", "layers", "description"}
    assert {t["metric"] for t in doc["tasks"]} <= {"accuracy", "r2"}
    presets = {p["name"]: p for p in doc["presets"]}
    assert presets["tiny"]["n_networks"] == 4 and presets["paper"]["n_networks"] == 1056
    assert all(p["description"] for p in presets.values())


def test_catalog_json_goes_to_the_injected_stdout_console() -> None:
    consoles, out, err = _consoles()
    result = _invoke(["catalog", "--json"], obj=consoles)
    assert result.exit_code == 0 and result.stdout == ""
    assert len(json.loads(out.getvalue())["rules"]) == 11
    assert err.getvalue() == ""


# ----------------------------------------------------------------------------------------------- errors
BAD_ARGS = [
    ("unknown preset", ["simulate", "--preset", "nope"], ["unknown preset 'nope'", "quick", "tiny"]),
    ("misspelt preset", ["simulate", "--preset", "quik"], ["did you mean 'quick'?"]),
    ("missing preset file", ["simulate", "--preset", "absent/x.toml"], ["absent/x.toml", "does not exist"]),
    ("device gpu", ["simulate", "--device", "gpu"], ["'--device'", "'gpu'", "'cpu', 'cuda'"]),
    ("negative seed", ["simulate", "--seed", "-1"], ["'--seed'", "-1"]),
    ("seed abc", ["simulate", "--seed", "abc"], ["'--seed'", "'abc'"]),
    ("huge seed", ["simulate", "--preset", "tiny", "--seed", str(2**64)], ["seed must be an integer in"]),
    ("unknown option", ["simulate", "--bogus"], ["--bogus"]),
    ("misspelt option", ["simulate", "--sed", "1"], ["--sed", "--seed"]),
    ("extra argument", ["simulate", "extra"], ["extra"]),
    ("unknown command", ["simulat"], ["simulat"]),
    ("missing option value", ["simulate", "--preset"], ["--preset"]),
]


@pytest.mark.parametrize(("args", "parts"), [c[1:] for c in BAD_ARGS], ids=[c[0] for c in BAD_ARGS])
@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["table", "json"])
def test_bad_input_gives_one_error_line_and_writes_nothing(
    tmp_path: Path, args: list[str], parts: list[str], json_flag: list[str]
) -> None:
    workspace = tmp_path / "ws"
    if args[0] == "simulate":  # the shared options first, so a missing option value stays missing
        args = ["simulate", "--workspace", str(workspace), *json_flag, *args[1:]]
    result = _invoke(args)
    assert_one_error_line(result, *parts)
    assert not workspace.exists()


def test_malformed_preset_file(tmp_path: Path) -> None:
    preset = tmp_path / "broken.toml"
    preset.write_text("[population]\nrules = [\n")
    workspace = tmp_path / "ws"
    result = _invoke(["simulate", "--preset", str(preset), "--workspace", str(workspace), "--json"])
    assert_one_error_line(result, str(preset), "malformed TOML")
    assert not workspace.exists()


def test_misspelt_key_in_a_preset_file(tmp_path: Path) -> None:
    preset = tmp_path / "typo.toml"
    preset.write_text(
        '[population]\nrules = ["sgdm"]\narchitectures = ["mlp3_relu"]\ntasks = ["digits"]\n'
        "n_network_per_rule = 3\n"
    )
    result = _invoke(["simulate", "--preset", str(preset), "--workspace", str(tmp_path / "ws")])
    assert_one_error_line(
        result,
        "typo.toml",
        "unknown key 'population.n_network_per_rule' (did you mean 'n_networks_per_rule'?)",
    )


def test_cuda_without_a_cuda_device(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    workspace = tmp_path / "ws"
    result = _invoke(["simulate", "--preset", "tiny", "--device", "cuda", "--workspace", str(workspace)])
    line = assert_one_error_line(result, "--device cuda: no CUDA device is available")
    assert line.endswith("use --device cpu")
    assert not workspace.exists()


def test_workspace_under_a_regular_file_is_rejected(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    workspace = blocker / "ws"
    result = _invoke(["simulate", "--preset", "tiny", "--workspace", str(workspace), "--json"])
    assert_one_error_line(result, f"workspace {workspace} is not writable", "is a file, not a directory")
    assert blocker.read_text() == "not a directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_workspace_from_the_environment(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = _invoke(["simulate", "--preset", "tiny"], env={"ADVISOR_WORKSPACE": str(blocker / "ws")})
    assert_one_error_line(result, f"workspace {blocker / 'ws'} is not writable")


@pytest.mark.parametrize(
    ("raised", "code", "line"),
    [
        (AdvisorError("first line\n  second line"), 2, "Error: first line second line"),
        (ConfigError("bad config"), 2, "Error: bad config"),
        (KeyboardInterrupt(), 130, "Interrupted"),
    ],
    ids=["advisor-error", "simulator-error", "interrupt"],
)
def test_errors_raised_inside_a_command(
    monkeypatch: pytest.MonkeyPatch, raised: BaseException, code: int, line: str
) -> None:
    def fail() -> None:
        raise raised

    monkeypatch.setattr("advisor.cli.catalog.catalog_document", fail)
    result = _invoke(["catalog", "--json"])
    assert result.exit_code == code
    assert result.stdout == ""
    assert result.stderr.splitlines() == [line]


def test_a_bug_is_not_disguised_as_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr("advisor.cli.catalog.catalog_document", fail)
    result = CliRunner().invoke(cli, ["catalog"])
    assert isinstance(result.exception, RuntimeError)
    assert "Error:" not in result.stderr


def test_main_returns_the_code_when_not_standalone() -> None:
    assert cli.main(["--help"], standalone_mode=False) == 0


# ----------------------------------------------------------------------------------------------- workspace
def test_workspace_open_creates_the_directory_and_leaves_no_probe(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "a" / "b")
    assert ws.root == tmp_path / "a" / "b" and ws.root.is_dir()
    assert list(ws.root.iterdir()) == []
    assert (ws.banks, ws.mlflow, ws.reports) == (ws.root / "banks", ws.root / "mlflow", ws.root / "reports")


def test_workspace_open_accepts_an_existing_directory_and_relative_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("x")
    assert Workspace.open(".").root == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_workspace_open_rejects_a_file(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(AdvisorError, match=rf"^workspace {path} is not writable: it is a file"):
        Workspace.open(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_workspace_open_rejects_a_read_only_parent(tmp_path: Path) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        with pytest.raises(AdvisorError, match="is not writable: Permission denied"):
            Workspace.open(parent / "ws")
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(0o700)


# ----------------------------------------------------------------------------------------------- progress
def test_progress_reporter_draws_networks_done_over_total() -> None:
    err = io.StringIO()
    reporter = ProgressBar(Console(file=err, width=120), "simulating tiny", unit="networks")
    reporter(1, 4, "")
    reporter(4, 4, "sgdm mlp3_relu digits")
    reporter.close()
    text = err.getvalue()
    assert "4/4" in text and "networks" in text and "sgdm mlp3_relu digits" in text


def test_progress_reporter_draws_nothing_if_never_called() -> None:
    err = io.StringIO()
    ProgressBar(Console(file=err), "simulating").close()
    assert err.getvalue() == ""


def test_progress_reporter_draws_nothing_for_a_cached_bank() -> None:
    err = io.StringIO()
    reporter = ProgressBar(Console(file=err), "simulating")
    reporter(4, 4, "cached")
    reporter.close()
    assert err.getvalue() == ""


def test_simulate_json_keeps_progress_off_stdout(tmp_path: Path) -> None:
    consoles, out, err = _consoles()
    result = _invoke(
        ["simulate", "--preset", "tiny", "--seed", "2", "--json", "--workspace", str(tmp_path)], obj=consoles
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(out.getvalue())["cached"] is False
    assert "4/4" in err.getvalue() and "networks" in err.getvalue()


def test_a_build_says_what_it_builds_and_where_before_it_starts(tmp_path: Path) -> None:
    """A mistyped workspace must not start a silent build: the first stderr line names the bank, its networks,
    the expected time on a 2-core CPU, its size and the folder; a cached bank says nothing of it."""
    from simulator.pipeline import build_estimate
    from simulator.presets import load_preset

    size, seconds = build_estimate(load_preset("tiny"))
    assert seconds < 60 and size < 2**20
    expected = (f"building the tiny bank (4 networks, under a minute on a 2-core CPU, {size / 1024:,.0f} KiB) in "
                f"{tmp_path / 'banks'}")
    consoles, _out, err = _consoles(width=400)
    assert _invoke(["simulate", "--preset", "tiny", "--workspace", str(tmp_path)], obj=consoles).exit_code == 0
    assert err.getvalue().splitlines()[0] == expected
    consoles, _out, err = _consoles(width=400)
    assert _invoke(["simulate", "--preset", "tiny", "--workspace", str(tmp_path)], obj=consoles).exit_code == 0
    assert "building" not in err.getvalue()


def test_the_build_estimate_of_the_default_bank_matches_its_measured_size() -> None:
    """quick: 431.1 MiB measured (452,082,657 bytes with 256 units per layer group, docs/performance.md); about 6
    minutes on a 2-core CPU."""
    from simulator.pipeline import build_estimate
    from simulator.presets import load_preset

    size, seconds = build_estimate(load_preset("quick"))
    assert abs(size / 2**20 - 431.1) < 2.0
    assert 5 * 60 <= seconds <= 7 * 60


# ----------------------------------------------------------------------------------------------- simulate
def _simulate_json(workspace: Path, *args: str) -> dict:
    result = _invoke(["simulate", "--preset", "tiny", "--json", "--workspace", str(workspace), *args])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)  # exactly one JSON document: anything else on stdout fails here


def test_simulate_json_then_cached(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    first = _simulate_json(workspace)
    assert set(first) == {"bank", "hash", "n_networks", "rules", "seconds", "cached", "size_bytes"}
    assert first["n_networks"] == 4 and first["cached"] is False
    assert first["rules"] == ["sgdm", "fa"]
    assert first["size_bytes"] > 0 and first["seconds"] >= 0
    assert Path(first["bank"]).is_relative_to(workspace / "banks")
    assert Path(first["bank"]).exists()

    second = _simulate_json(workspace)
    assert second["cached"] is True
    assert (second["hash"], second["bank"], second["n_networks"]) == (first["hash"], first["bank"], 4)


def test_simulate_reads_the_session_bank_from_its_workspace(
    tiny_bank: SimulationResult, tiny_workspace: Path
) -> None:
    doc = _simulate_json(tiny_workspace)
    assert doc["cached"] is True
    assert doc["hash"] == tiny_bank.bank.hash


def test_seed_override_changes_the_bank(tiny_bank: SimulationResult, tiny_workspace: Path) -> None:
    doc = _simulate_json(tiny_workspace, "--seed", "1")
    assert doc["cached"] is False
    assert doc["hash"] != tiny_bank.bank.hash


def test_simulate_summary_mentions_every_rule(tiny_bank: SimulationResult, tiny_workspace: Path) -> None:
    consoles, out, _ = _consoles(width=160)
    result = _invoke(["simulate", "--preset", "tiny", "--workspace", str(tiny_workspace)], obj=consoles)
    assert result.exit_code == 0, result.stderr
    text = out.getvalue()
    for word in ("sgdm", "fa", "mlp3_relu", "digits", "accuracy", "Networks per rule", "Final performance"):
        assert word in text
    assert tiny_bank.bank.hash in text
    assert str(tiny_bank.bank.path) in text
    assert "cached" in text and "yes" in text
    assert "MiB" in text


def test_simulate_summary_on_the_default_console(tiny_bank: SimulationResult, tiny_workspace: Path) -> None:
    result = _invoke(["simulate", "--preset", "tiny", "--workspace", str(tiny_workspace)])
    assert result.exit_code == 0, result.stderr
    assert "sgdm" in result.stdout and "fa" in result.stdout and "Final performance" in result.stdout


@pytest.mark.parametrize(("cores", "hinted"), [(8, True), (2, False)])
def test_a_one_core_build_on_a_many_core_machine_says_how_to_use_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cores: int, hinted: bool
) -> None:
    import advisor.cli.app as cli_module

    monkeypatch.setattr(cli_module, "usable_cores", lambda: cores)
    consoles, out, err = _consoles()
    args = ["simulate", "--preset", "tiny", "--seed", "5", "--json", "--workspace", str(tmp_path)]
    assert _invoke(args, obj=consoles).exit_code == 0
    hint = ("Note: shards train one at a time on one core of this machine's 8; `advisor simulate --preset tiny "
            "--scheduler local:8` (pip install 'lr-advisor[cluster]') trains 8 at once into the same bank")
    assert (hint in err.getvalue()) is hinted
    assert "Note:" not in out.getvalue()
    if hinted:  # a cached bank trains nothing, so it says nothing
        consoles, _, err = _consoles()
        assert _invoke(args, obj=consoles).exit_code == 0
        assert "Note:" not in err.getvalue()
        consoles, _, err = _consoles()
        assert _invoke(["simulate", "--preset", "tiny", "--seed", "6", "--device", "cpu", "--scheduler", "local:1",
                        "--json", "--workspace", str(tmp_path / "dask")], obj=consoles).exit_code == 0
        assert "Note:" not in err.getvalue()


class _FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_off_a_terminal_progress_is_plain_lines_at_most_every_15_seconds() -> None:
    err, clock = io.StringIO(), _FakeClock()
    bar = ProgressBar(Console(file=err, width=100), "simulating tiny", unit="networks", clock=clock)
    for t, done in ((0, 1), (5, 2), (16, 3), (20, 4), (30, 10)):
        clock.now = t
        bar(done, 10, "sgdm · mlp3_relu · digits")
    bar.close()
    assert err.getvalue().splitlines() == [
        "simulating tiny: 0/10 networks, 0:00:00 elapsed, ETA ?",
        "simulating tiny: 3/10 networks, 0:00:16 elapsed, ETA 0:00:37 (sgdm · mlp3_relu · digits)",
        "simulating tiny: 10/10 networks, done in 0:00:30 (last: sgdm · mlp3_relu · digits)",
    ]


def test_off_a_terminal_every_stage_ends_in_one_line() -> None:
    err, clock = io.StringIO(), _FakeClock()
    bar = ProgressBar(Console(file=err, width=100), clock=clock)
    bar.start("searching protocols", 3)
    for t in (2, 4, 6):
        clock.now = t
        bar.advance()
    bar.start("re-checking with fresh seeds", 1)
    clock.now = 7
    bar.close()
    assert err.getvalue().splitlines() == [
        "searching protocols: 0/3, 0:00:00 elapsed, ETA ?",
        "searching protocols: 3/3, done in 0:00:06",
        "re-checking with fresh seeds: 0/1, 0:00:00 elapsed, ETA ?",
        "re-checking with fresh seeds: stopped at 0/1 after 0:00:01",
    ]


def test_on_a_terminal_progress_is_a_rich_bar() -> None:
    err = io.StringIO()
    bar = ProgressBar(Console(file=err, width=100, force_terminal=True), "simulating tiny", unit="networks")
    bar(1, 4, "")
    bar(4, 4, "")
    bar.close()
    text = err.getvalue()
    assert "━" in text and "4/4" in text and "elapsed" not in text
