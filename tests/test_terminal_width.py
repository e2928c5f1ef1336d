"""Every command's terminal output at 80 and 100 columns (rich ``Console(width=...)``): no line wider than the
terminal and nothing cut, so IDs, numbers and names are whole. The one exception is a line that names a file or
a URL (reports, the MLflow run, the study): it is printed unwrapped so that it can be copied whole."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from advisor.application.console import Consoles
from advisor.cli import COMMANDS, cli

WIDTHS = (80, 100)
UNWRAPPED = ("Reports: ", "MLflow run: ", "MLflow: ", "Study: ", "Folder: ", "Identify one: ")
"""Lines printed whole (paths, URLs), however wide."""
FAST = ["--trials", "4", "--splits", "5", "--setaside", "0.5", "--no-curves", "--statistics", "marginal",
        "--target-accuracy", "0.6"]


@pytest.fixture(autouse=True)
def _no_tracking_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _run(args: list[str], width: int) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    consoles = Consoles(out=Console(file=out, width=width, force_terminal=False),
                        err=Console(file=err, width=width, force_terminal=False))
    result = CliRunner().invoke(cli, args, obj=consoles, catch_exceptions=False)
    return result.exit_code, out.getvalue() + result.stdout, err.getvalue() + result.stderr


def assert_fits(text: str, width: int, *whole: str) -> None:
    """No line wider than ``width`` (except the unwrapped path lines), no ellipsis, and every ``whole`` string
    on one line, uncut."""
    assert text.strip()
    for line in text.splitlines():
        assert len(line) <= width or line.lstrip().startswith(UNWRAPPED), (width, line)
    assert "…" not in text, text
    for item in whole:
        assert item in text, (item, text)


@pytest.fixture(scope="module")
def workspace(plan_bank: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any],
                                                                                    dict[str, Any]]:
    """A workspace with one plan and one comparison on the plan bank, and their documents."""
    ws = tmp_path_factory.mktemp("width-ws")
    code, out, err = _run(["plan", "--bank", str(plan_bank.path), "--workspace", str(ws), *FAST, "--json"], 100)
    assert code == 0, err
    plan = json.loads(out)
    code, out, err = _run(["compare", "--bank", str(plan_bank.path), "--workspace", str(ws), *FAST[:6],
                           "--target-accuracy", "0.6", "--modalities", "ephys,two_photon,paired_patch",
                           "--observable", "activations", "--json"], 100)
    assert code == 0, err
    return ws, plan, json.loads(out)


@pytest.mark.parametrize("width", WIDTHS)
def test_plan_output_fits(workspace: tuple[Path, dict[str, Any], dict[str, Any]], width: int) -> None:
    from advisor.cli.plan import _render_plan

    _, doc, _ = workspace
    out = io.StringIO()
    _render_plan(Console(file=out, width=width, force_terminal=False), doc, doc["reports"])
    final = doc["setaside"]
    assert_fits(out.getvalue(), width, f"{final['accuracy']:.3f}", f"{final['ci'][0]:.3f}-{final['ci'][1]:.3f}",
                doc["run_id"], "classifier")
    for trial in doc["pareto"]:
        assert f"{trial['accuracy']:.3f}" in out.getvalue()


@pytest.mark.parametrize("width", WIDTHS)
def test_compare_output_fits_with_every_modality_named_and_noise_by_model(
    workspace: tuple[Path, dict[str, Any], dict[str, Any]], width: int
) -> None:
    from advisor.cli.plan import _render_compare

    _, _, doc = workspace
    out = io.StringIO()
    _render_compare(Console(file=out, width=width, force_terminal=False), doc, doc["reports"])
    text = out.getvalue()
    numbers = [f"{(m.get('setaside') or m['best'])['accuracy']:.3f}" for m in doc["modalities"] if m.get("best")]
    assert_fits(text, width, *(m["name"] for m in doc["modalities"]), *numbers)
    by_name = {m["name"]: m for m in doc["modalities"]}
    ephys = by_name["ephys"]["recommendation"] or by_name["ephys"]["best"]
    assert ephys["noise_model"] == "poisson" and f"{ephys['noise']:.3g} sp. ({ephys['repeats']})" in text
    two_photon = by_name["two_photon"]["recommendation"] or by_name["two_photon"]["best"]
    assert two_photon["noise_model"] == "gaussian" and f"SD {two_photon['noise']:.2g}" in text
    caption = " ".join(text.split())
    assert "Gaussian SD relative to each unit's response spread (lower is better)" in caption
    assert "Poisson mean spikes per stimulus (more is better)" in caption


def test_compare_names_the_modality_on_every_progress_bar(plan_bank: Any, tmp_path: Path) -> None:
    code, _, err = _run(["compare", "--bank", str(plan_bank.path), "--workspace", str(tmp_path), *FAST[:6],
                         "--modalities", "ephys,two_photon", "--observable", "activations"], 100)
    assert code == 0, err
    stages = [line for line in err.splitlines() if re.match(r"^\S.*: .*\d+/\d+", line)]
    assert stages, err
    assert all(line.startswith(("ephys: ", "two_photon: ")) for line in stages), stages
    assert any(line.startswith("two_photon: ") for line in stages)


@pytest.mark.parametrize("width", WIDTHS)
def test_runs_list_and_show_fit(workspace: tuple[Path, dict[str, Any], dict[str, Any]], width: int) -> None:
    ws, plan, compare = workspace
    code, out, err = _run(["runs", "list", "--workspace", str(ws)], width)
    assert code == 0, err
    assert_fits(out, width, plan["run_id"][:8], compare["run_id"][:8], f"{plan['setaside']['accuracy']:.3f}")
    code, out, err = _run(["runs", "show", plan["run_id"][:8], "--workspace", str(ws)], width)
    assert code == 0, err
    assert_fits(out, width, plan["run_id"], plan["bank"]["hash"][:12])


@pytest.mark.parametrize("width", WIDTHS)
def test_evaluate_output_fits(plan_bank: Any, width: int) -> None:
    code, out, err = _run(["evaluate", "--bank", str(plan_bank.path), "--units", "24", "--sessions", "4",
                           "--splits", "4"], width)
    assert code == 0, err
    assert_fits(out, width, "accuracy", "Confusion matrix", "Classifier: ridge")


@pytest.mark.parametrize("width", WIDTHS)
def test_export_and_identify_output_fit(workspace: tuple[Path, dict[str, Any], dict[str, Any]], width: int,
                                        tmp_path: Path) -> None:
    ws, plan, _ = workspace
    code, out, err = _run(["export", "--run", plan["run_id"][:8], "--networks", "2", "--out", str(tmp_path),
                           "--format", "npz", "--workspace", str(ws)], width)
    assert code == 0, err
    assert_fits(out, width, "true rule: ")
    recording = sorted(tmp_path.glob("*.npz"))[0]
    code, out, err = _run(["identify", str(recording), "--run", plan["run_id"][:8], "--workspace", str(ws)], width)
    assert code == 0, err
    probabilities = re.findall(r"\b[01]\.\d{3}\b", out)
    assert len(probabilities) >= 3, out
    assert_fits(out, width, "Posterior over the simulated rules", "misspecification p", "expected calibration error")


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("args", [["catalog"], ["simulate", "--preset", "quick", "--dry-run"]],
                         ids=["catalog", "simulate-dry-run"])
def test_catalog_and_dry_run_fit(args: list[str], width: int, tmp_path: Path) -> None:
    code, out, err = _run([*args, "--workspace", str(tmp_path)], width)
    assert code == 0, err
    assert_fits(out, width)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_fits(command: str, width: int) -> None:
    args = [*command.split(), "--help"] if command != "runs" else ["runs", "list", "--help"]
    code, out, err = _run(args, width)
    assert code == 0, err
    assert_fits(out, width)
