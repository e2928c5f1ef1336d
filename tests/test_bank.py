"""Tests of the on-disk trajectory bank (simulator.bank): round trip, resume, corruption, errors, locking."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.bank import BankWriter, TrajectoryBank, bank_is_complete, load_bank
from simulator.config import SCHEMA_VERSION
from simulator.errors import BankError

LAYOUT = {"activations": ((5, 3, 4, 2), "float16"), "loss": ((5,), "float32")}
N = 10
# Shards of sizes 4, 4, 2 with scattered network indices, so ordering by network index is really tested.
SHARDS = {0: [7, 0, 3, 9], 1: [1, 8, 4, 6], 2: [5, 2]}
CONFIG = {"name": "fake", "rules": ["sgd"], "seed": 3, "n_steps": 4}
HASH = "ab" * 32


def make_data(seed: int = 0) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Full per-network data (float64, before the dtype cast) and metadata rows, indexed by network."""
    rng = np.random.default_rng(seed)
    arrays = {name: rng.normal(size=(N, *shape)) for name, (shape, _) in LAYOUT.items()}
    rows = [
        {"rule": f"r{i % 3}", "lr": 0.01 * (i + 1), "batch": np.int64(32 + i), "ok": bool(i % 2)}
        for i in range(N)
    ]
    return arrays, rows


def write(writer: BankWriter, shard: int, data: tuple[dict[str, np.ndarray], list[dict]]) -> None:
    arrays, rows = data
    idx = SHARDS[shard]
    writer.write_shard(shard, idx, {k: v[idx] for k, v in arrays.items()}, [rows[i] for i in idx])


def build(path: Path, seed: int = 0, order: tuple[int, ...] = (0, 1, 2)) -> TrajectoryBank:
    data = make_data(seed)
    with BankWriter(path, CONFIG, HASH, N, LAYOUT) as w:
        for s in order:
            write(w, s, data)
        return w.finalize(seconds=1.5, extra={"code": "test"})


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flip_byte(path: Path, offset: int) -> None:
    blob = bytearray(path.read_bytes())
    blob[offset] ^= 0xFF
    path.write_bytes(bytes(blob))


# ------------------------------------------------------------------------------------------------- round trip
def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "bank"
    arrays, _ = make_data()
    built = build(path, order=(2, 0, 1))
    bank = load_bank(path)
    for b in (built, bank):
        assert b.n_networks == N
        assert b.array_names == ["activations", "loss"]
        assert b.hash == HASH and b.config == CONFIG
        for name, (shape, dtype) in LAYOUT.items():
            arr = b[name]
            assert arr.shape == (N, *shape) and arr.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(arr, arrays[name].astype(dtype))
            assert isinstance(arr, np.memmap) and not arr.flags.writeable
            assert b[name] is arr  # cached

    md = bank.metadata
    assert isinstance(md, pd.DataFrame)
    assert list(md.index) == list(range(N)) and md.index.name == "network"
    assert list(md["rule"]) == [f"r{i % 3}" for i in range(N)]
    assert list(md["batch"]) == [32 + i for i in range(N)]
    assert md["lr"].to_numpy() == pytest.approx([0.01 * (i + 1) for i in range(N)])
    assert list(md["ok"]) == [bool(i % 2) for i in range(N)]

    m = bank.manifest
    assert m["format"] == "lr-advisor-bank" and m["schema_version"] == SCHEMA_VERSION
    assert m["hash"] == HASH and m["config"] == CONFIG and m["complete"] is True
    assert m["n_networks"] == N and m["seconds"] == pytest.approx(1.5) and m["extra"] == {"code": "test"}
    assert datetime.fromisoformat(m["created"]).tzinfo is not None
    for name, (shape, dtype) in LAYOUT.items():
        f = path / "arrays" / f"{name}.npy"
        info = m["arrays"][name]
        assert info == {"shape": [N, *shape], "dtype": dtype, "sha256": sha(f), "bytes": f.stat().st_size}
    assert json.loads((path / "manifest.json").read_text()) == m
    assert json.loads((path / "metadata.json").read_text())[3]["batch"] == 35

    files = [path / "arrays" / "activations.npy", path / "arrays" / "loss.npy"]
    files += [path / "metadata.json", path / "manifest.json"]
    assert bank.size_bytes() == sum(f.stat().st_size for f in files) > 0
    assert not (path / "shards").exists()
    assert not list(path.rglob("*.tmp"))
    bank.verify()
    load_bank(path, verify=True)
    assert bank_is_complete(path, HASH)


def test_dtype_cast_and_integer_layout(tmp_path: Path) -> None:
    layout = {"w": ((2,), "int8")}
    with BankWriter(tmp_path / "b", CONFIG, HASH, 2, layout) as w:
        w.write_shard(0, [1, 0], {"w": np.array([[1.7, -2.2], [3.0, 4.9]])}, [{"i": 1}, {"i": 0}])
        bank = w.finalize(0.0)
    assert bank["w"].dtype == np.int8
    np.testing.assert_array_equal(bank["w"], [[3, 4], [1, -2]])
    assert list(bank.metadata["i"]) == [0, 1]


def test_array_files_are_exactly_what_np_save_writes(tmp_path: Path) -> None:
    """finalize writes rows in place; the files must be the standard .npy of the assembled arrays, byte for byte
    (a per-network scalar and a float16 block included)."""
    import io

    layout = {**LAYOUT, "final": ((), "float64")}
    arrays, rows = make_data()
    arrays["final"] = np.arange(N, dtype=np.float64) / 7
    with BankWriter(tmp_path / "b", CONFIG, HASH, N, layout) as w:
        for shard in (2, 0, 1):
            idx = SHARDS[shard]
            w.write_shard(shard, idx, {k: v[idx] for k, v in arrays.items()}, [rows[i] for i in idx])
        w.finalize(0.0)
    for name, (_, dtype) in layout.items():
        expected = io.BytesIO()
        np.save(expected, arrays[name].astype(dtype))
        assert (tmp_path / "b" / "arrays" / f"{name}.npy").read_bytes() == expected.getvalue(), name


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_round_trip_any_partition(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 12), label="n")
    perm = data.draw(st.permutations(list(range(n))), label="perm")
    cuts = sorted(data.draw(st.sets(st.integers(1, n - 1), max_size=4), label="cuts")) if n > 1 else []
    shards = [perm[a:b] for a, b in zip([0, *cuts], [*cuts, n], strict=True)]
    order = data.draw(st.permutations(list(range(len(shards)))), label="order")
    rng = np.random.default_rng(n)
    full = rng.normal(size=(n, 3)).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        with BankWriter(Path(d) / "b", CONFIG, HASH, n, {"x": ((3,), "float32")}) as w:
            for s in order:
                idx = shards[s]
                w.write_shard(s, idx, {"x": full[idx]}, [{"net": i} for i in idx])
            bank = w.finalize(0.0)
        np.testing.assert_array_equal(bank["x"], full)
        assert list(bank.metadata["net"]) == list(range(n))
        del bank


# ---------------------------------------------------------------------------------------------------- resume
def test_resume_is_byte_identical(tmp_path: Path) -> None:
    data = make_data()
    resumed = tmp_path / "resumed"
    w = BankWriter(resumed, CONFIG, HASH, N, LAYOUT)
    write(w, 2, data)
    write(w, 0, data)
    assert w.done_shards() == {0, 2}
    w.close()  # "killed" before finalize
    with pytest.raises(BankError, match="incomplete"):
        load_bank(resumed)
    assert not bank_is_complete(resumed, HASH)

    w = BankWriter(resumed, CONFIG, HASH, N, LAYOUT)
    assert w.done_shards() == {0, 2}
    write(w, 1, data)
    bank = w.finalize(seconds=2.0)
    assert bank.manifest["seconds"] >= 2.0  # this run plus the (tiny) shard times of the first run

    build(tmp_path / "straight")
    for name in ("arrays/activations.npy", "arrays/loss.npy", "metadata.json"):
        assert (resumed / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()


def test_crash_during_finalize_leaves_resumable_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bank"
    build(path, seed=0)  # a complete bank that is being rebuilt when the "crash" happens
    data = make_data(1)
    real_replace = os.replace

    def crash_on_loss(src: object, dst: object) -> None:
        if str(dst).endswith("loss.npy"):
            raise OSError("simulated crash")
        real_replace(src, dst)

    with BankWriter(path, CONFIG, HASH, N, LAYOUT) as w:
        for s in SHARDS:
            write(w, s, data)
        monkeypatch.setattr(os, "replace", crash_on_loss)
        with pytest.raises(OSError, match="simulated crash"):
            w.finalize(1.0)
        monkeypatch.undo()
    assert "incomplete" in load_error(path)
    assert not bank_is_complete(path, HASH)
    assert not list(path.rglob("*.tmp"))
    with BankWriter(path, CONFIG, HASH, N, LAYOUT) as w:
        assert w.done_shards() == set(SHARDS)
        bank = w.finalize(1.0)
    np.testing.assert_array_equal(bank["loss"], data[0]["loss"].astype("float32"))
    load_bank(path, verify=True)


def test_rebuild_over_complete_bank_replaces_it(tmp_path: Path) -> None:
    path = tmp_path / "bank"
    build(path, seed=0)
    bank = build(path, seed=1)
    np.testing.assert_array_equal(bank["loss"], make_data(1)[0]["loss"].astype("float32"))
    load_bank(path, verify=True)


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_done_shards_discards_damaged_shard(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    path = tmp_path / "bank"
    data = make_data()
    with BankWriter(path, CONFIG, HASH, N, LAYOUT) as w:
        for s in SHARDS:
            write(w, s, data)
    npz = path / "shards" / "shard-00001.npz"
    size = npz.stat().st_size
    if damage == "truncate":
        npz.write_bytes(npz.read_bytes()[: size // 2])
    else:
        flip_byte(npz, size // 2)
        assert npz.stat().st_size == size

    with BankWriter(path, CONFIG, HASH, N, LAYOUT) as w:
        with caplog.at_level(logging.WARNING, logger="simulator.bank"):
            assert w.done_shards() == {0, 2}
        assert not npz.exists() and not npz.with_suffix(".json").exists()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "shard-00001.npz" in warnings[0].getMessage()
        caplog.clear()
        write(w, 1, data)
        assert w.done_shards() == {0, 1, 2}
        bank = w.finalize(0.0)
    assert not caplog.records
    np.testing.assert_array_equal(bank["activations"], data[0]["activations"].astype("float16"))


def test_tmp_and_uncommitted_files_are_ignored_and_cleaned(tmp_path: Path) -> None:
    path = tmp_path / "bank"
    data = make_data()
    with BankWriter(path, CONFIG, HASH, N, LAYOUT) as w:
        write(w, 0, data)
        write(w, 1, data)
    shards = path / "shards"
    # A crash between the npz rename and the sidecar rename leaves an npz without sidecar: not committed.
    (shards / "shard-00001.json").unlink()
    (shards / "shard-00002.npz.tmp").write_bytes(b"half")
    (path / "manifest.json.tmp").write_text("{")
    with BankWriter(path, CONFIG, HASH, N, LAYOUT) as w:
        assert not list(path.rglob("*.tmp"))
        assert w.done_shards() == {0}
        assert not (shards / "shard-00001.npz").exists()


def test_shard_with_sidecar_but_no_npz_is_discarded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "bank"
    with BankWriter(path, CONFIG, HASH, N, LAYOUT) as w:
        write(w, 2, make_data())
        (path / "shards" / "shard-00002.npz").unlink()
        with caplog.at_level(logging.WARNING, logger="simulator.bank"):
            assert w.done_shards() == set()
    assert "shard-00002.npz" in caplog.text and "missing" in caplog.text


def test_shard_written_with_another_layout_is_discarded(tmp_path: Path) -> None:
    path = tmp_path / "bank"
    with BankWriter(path, CONFIG, HASH, N, LAYOUT) as w:
        write(w, 2, make_data())
    layout = {**LAYOUT, "loss": ((5,), "float64")}
    with BankWriter(path, CONFIG, HASH, N, layout) as w:
        assert w.done_shards() == set()


# ------------------------------------------------------------------------------------------- finalize / write
def test_finalize_with_missing_shard(tmp_path: Path) -> None:
    path = tmp_path / "bank"
    with BankWriter(path, CONFIG, HASH, N, LAYOUT) as w:
        write(w, 0, make_data())
        write(w, 1, make_data())
        with pytest.raises(BankError, match=r"2 of 10 networks are missing") as e:
            w.finalize(1.0)
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert not bank_is_complete(path, HASH)


def test_finalize_with_network_in_two_shards(tmp_path: Path) -> None:
    data = make_data()
    with BankWriter(tmp_path / "bank", CONFIG, HASH, N, LAYOUT) as w:
        for s in SHARDS:
            write(w, s, data)
        w.write_shard(7, [5], {k: v[[5]] for k, v in data[0].items()}, [data[1][5]])
        with pytest.raises(BankError, match="1 networks are covered by more than one shard"):
            w.finalize(1.0)


def test_write_shard_validation(tmp_path: Path) -> None:
    arrays, rows = make_data()
    idx = SHARDS[0]
    good = {k: v[idx] for k, v in arrays.items()}
    good_rows = [rows[i] for i in idx]
    with BankWriter(tmp_path / "bank", CONFIG, HASH, N, LAYOUT) as w:
        with pytest.raises(ValueError, match=r"missing \['loss'\], unexpected \['lost'\]"):
            w.write_shard(0, idx, {"activations": good["activations"], "lost": good["loss"]}, good_rows)
        with pytest.raises(ValueError, match=r"'loss' has shape \(4, 6\), expected \(4, 5\)"):
            w.write_shard(0, idx, {**good, "loss": np.zeros((4, 6))}, good_rows)
        with pytest.raises(ValueError, match=r"outside \[0, 10\)"):
            w.write_shard(0, [0, 1, 2, 10], good, good_rows)
        with pytest.raises(ValueError, match="twice"):
            w.write_shard(0, [0, 1, 1, 2], good, good_rows)
        with pytest.raises(ValueError, match="list of 4 dicts"):
            w.write_shard(0, idx, good, good_rows[:3])
        with pytest.raises(ValueError, match="not JSON-serialisable"):
            w.write_shard(0, idx, good, [{"x": object()}] * 4)
        with pytest.raises(ValueError, match="non-negative"):
            w.write_shard(-1, idx, good, good_rows)
        assert w.done_shards() == set()


def test_bad_writer_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_networks"):
        BankWriter(tmp_path / "a", CONFIG, HASH, 0, LAYOUT)
    with pytest.raises(ValueError, match="must match"):
        BankWriter(tmp_path / "a", CONFIG, HASH, N, {"../evil": ((1,), "float32")})
    with pytest.raises(ValueError, match="plain numeric dtype"):
        BankWriter(tmp_path / "a", CONFIG, HASH, N, {"x": ((1,), "object")})
    with pytest.raises(ValueError, match="JSON-serialisable"):
        BankWriter(tmp_path / "a", {"x": object()}, HASH, N, LAYOUT)


def test_writer_is_closed_after_finalize(tmp_path: Path) -> None:
    path = tmp_path / "bank"
    data = make_data()
    w = BankWriter(path, CONFIG, HASH, N, LAYOUT)
    for s in SHARDS:
        write(w, s, data)
    w.finalize(0.0)
    with pytest.raises(BankError, match="closed"):
        w.done_shards()
    with pytest.raises(BankError, match="closed"):
        write(w, 0, data)
    BankWriter(path, CONFIG, HASH, N, LAYOUT).close()  # the lock was released


# ------------------------------------------------------------------------------------------------ load errors
@pytest.fixture
def bank_path(tmp_path: Path) -> Path:
    path = tmp_path / "bank"
    build(path)
    return path


def load_error(path: Path, *, verify: bool = False) -> str:
    with pytest.raises(BankError) as e:
        load_bank(path, verify=verify)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_load_missing_path(tmp_path: Path) -> None:
    assert "does not exist" in load_error(tmp_path / "nope")


def test_load_file_instead_of_dir(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    assert "not a directory" in load_error(f)


def test_load_no_manifest(tmp_path: Path) -> None:
    assert "not a bank (no manifest.json)" in load_error(tmp_path)


def test_load_bad_json(bank_path: Path) -> None:
    (bank_path / "manifest.json").write_text("{not json")
    msg = load_error(bank_path)
    assert "not an lr-advisor bank" in msg and "not valid JSON" in msg


def test_load_foreign_format(bank_path: Path) -> None:
    m = json.loads((bank_path / "manifest.json").read_text())
    (bank_path / "manifest.json").write_text(json.dumps({**m, "format": "something-else"}))
    msg = load_error(bank_path)
    assert "not an lr-advisor bank" in msg and "something-else" in msg


def test_load_wrong_schema_version(bank_path: Path) -> None:
    m = json.loads((bank_path / "manifest.json").read_text())
    (bank_path / "manifest.json").write_text(json.dumps({**m, "schema_version": SCHEMA_VERSION + 7}))
    msg = load_error(bank_path)
    assert f"schema version {SCHEMA_VERSION + 7}" in msg and f"reads schema version {SCHEMA_VERSION}" in msg
    assert not bank_is_complete(bank_path, HASH)


def test_load_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "bank"
    with BankWriter(path, CONFIG, HASH, N, LAYOUT) as w:
        write(w, 0, make_data())
    assert "incomplete: run `advisor simulate` again to resume" in load_error(path)


def test_load_truncated_array(bank_path: Path) -> None:
    f = bank_path / "arrays" / "activations.npy"
    size = f.stat().st_size
    f.write_bytes(f.read_bytes()[: size - 10])
    msg = load_error(bank_path)
    assert str(f) in msg and f"has {size - 10} bytes" in msg and str(size) in msg
    assert not bank_is_complete(bank_path, HASH)


def test_load_missing_array(bank_path: Path) -> None:
    f = bank_path / "arrays" / "loss.npy"
    f.unlink()
    msg = load_error(bank_path)
    assert str(f) in msg and "missing" in msg
    assert not bank_is_complete(bank_path, HASH)


def test_load_corrupt_bytes_caught_by_verify(bank_path: Path) -> None:
    f = bank_path / "arrays" / "loss.npy"
    flip_byte(f, f.stat().st_size - 3)
    bank = load_bank(bank_path)  # the cheap size check passes
    with pytest.raises(BankError, match="corrupt"):
        bank.verify()
    msg = load_error(bank_path, verify=True)
    assert str(f) in msg and "sha256" in msg


def test_unknown_array_name(bank_path: Path) -> None:
    bank = load_bank(bank_path)
    with pytest.raises(BankError, match=r"no array 'nope'; available: activations, loss"):
        bank["nope"]
    assert "loss" in bank and "nope" not in bank


def test_load_accepts_str_path(bank_path: Path) -> None:
    assert load_bank(str(bank_path)).n_networks == N


# -------------------------------------------------------------------------------------------------- ownership
def test_other_config_hash_refused(bank_path: Path) -> None:
    with pytest.raises(BankError, match="belongs to another config") as e:
        BankWriter(bank_path, CONFIG, "cd" * 32, N, LAYOUT)
    assert str(bank_path) in str(e.value)
    load_bank(bank_path, verify=True)  # untouched
    BankWriter(bank_path, CONFIG, HASH, N, LAYOUT).close()  # the failed writer did not keep the lock


def test_foreign_manifest_refused(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other-tool"}))
    with pytest.raises(BankError, match="belongs to another config"):
        BankWriter(tmp_path, CONFIG, HASH, N, LAYOUT)
    (tmp_path / "manifest.json").write_text("{oops")
    with pytest.raises(BankError, match=r"unreadable manifest\.json"):
        BankWriter(tmp_path, CONFIG, HASH, N, LAYOUT)


def test_non_bank_directory_or_file_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(BankError, match=r"not a bank \(it holds notes.txt\)"):
        BankWriter(tmp_path, CONFIG, HASH, N, LAYOUT)
    assert not (tmp_path / "shards").exists()
    with pytest.raises(BankError, match="not a directory"):
        BankWriter(tmp_path / "notes.txt", CONFIG, HASH, N, LAYOUT)


# ---------------------------------------------------------------------------------------------------- lock
def test_second_writer_in_same_process_is_locked_out(tmp_path: Path) -> None:
    path = tmp_path / "bank"
    first = BankWriter(path, CONFIG, HASH, N, LAYOUT)
    # flock locks belong to the open file description, so a second open() in this process conflicts too.
    with open(path / ".lock") as f:
        with pytest.raises(BlockingIOError):
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    with pytest.raises(BankError, match="being built by another process") as e:
        BankWriter(path, CONFIG, HASH, N, LAYOUT)
    assert f"(lock {path / '.lock'})" in str(e.value)
    write(first, 0, make_data())  # the refused writer changed nothing
    first.close()
    with BankWriter(path, CONFIG, HASH, N, LAYOUT) as again:
        assert again.done_shards() == {0}


def test_writer_locked_out_by_other_process(tmp_path: Path) -> None:
    path = tmp_path / "bank"
    path.mkdir()
    holder = (
        "import fcntl, sys\n"
        f"f = open({str(path / '.lock')!r}, 'a')\n"
        "fcntl.flock(f.fileno(), fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(BankError, match=r"being built by another process \(lock .*\.lock\)"):
            BankWriter(path, CONFIG, HASH, N, LAYOUT)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)
        proc.stdout.close()
    BankWriter(path, CONFIG, HASH, N, LAYOUT).close()


# -------------------------------------------------------------------------------------------------- cache hit
def test_bank_is_complete(tmp_path: Path, bank_path: Path) -> None:
    assert bank_is_complete(bank_path, HASH)
    assert not bank_is_complete(bank_path, "cd" * 32)
    assert not bank_is_complete(tmp_path / "nope", HASH)
    assert not bank_is_complete(tmp_path, HASH)  # a directory without manifest
    m = json.loads((bank_path / "manifest.json").read_text())
    (bank_path / "manifest.json").write_text(json.dumps({**m, "complete": False}))
    assert not bank_is_complete(bank_path, HASH)
    (bank_path / "manifest.json").write_text("[1, 2")
    assert not bank_is_complete(bank_path, HASH)
