"""The on-disk trajectory bank: what a simulation recorded, one ``.npy`` per array, memory-mappable.

A bank is a directory::

    manifest.json          format, schema version, config + hash, completeness, array shapes/dtypes/sha256
    arrays/<name>.npy      one array per recorded quantity; leading axis = network index 0..n_networks-1
    metadata.json          one dict of JSON scalars per network, ordered by network index
    shards/shard-NNNNN.npz only while building: one finished shard (uncompressed npz) ...
    shards/shard-NNNNN.json  ... and its sidecar (network indices, metadata rows, the npz's sha256)
    .lock                  an ``fcntl`` lock file held while building

:class:`BankWriter` builds a bank shard by shard (a killed build resumes from the shards already
committed) and :meth:`BankWriter.finalize` assembles the shards into the final arrays with bounded memory.
:func:`load_bank` opens a finished bank as a :class:`TrajectoryBank`, and :func:`bank_is_complete` is the
cheap cache-hit test.

Every write goes to a ``*.tmp`` file in the same directory, is fsynced and then renamed over the final name,
so a process killed at any moment leaves either the old state or the new one, never a half-written final file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np
import pandas as pd

from simulator.config import SCHEMA_VERSION
from simulator.errors import BankError

logger = logging.getLogger(__name__)

FORMAT = "lr-advisor-bank"
"""The ``format`` field of every bank manifest."""

MANIFEST = "manifest.json"
METADATA = "metadata.json"
ARRAYS_DIR = "arrays"
SHARDS_DIR = "shards"
LOCK = ".lock"
TMP_SUFFIX = ".tmp"

_CHUNK = 1 << 20
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_SHARD_RE = re.compile(r"^shard-(\d+)\.(npz|json)$")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: the same shard always gives the same npz bytes

Layout = dict[str, tuple[tuple[int, ...], str]]


# ---------------------------------------------------------------------------------------------------- helpers
def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks.

    Args:
        path: the file.

    Returns:
        The hex digest.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` of ``fd`` (``os.pwrite`` may write less than asked)."""
    while data:
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


def _fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (best effort: some filesystems refuse to fsync directories)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` atomically: ``write`` fills ``path.tmp``, which is fsynced and renamed over ``path``."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, indent=1, default=_json_default).encode()


def _atomic_write_json(path: Path, obj: Any) -> None:
    blob = _dumps(obj)
    _atomic_write(path, lambda f: f.write(blob))


def _read_json(path: Path) -> Any:
    with open(path, "rb") as f:
        return json.loads(f.read())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _npy_data_bytes(shape: Sequence[int], dtype: str) -> int:
    return math.prod(shape) * np.dtype(dtype).itemsize


def _check_layout(layout: Layout) -> dict[str, tuple[tuple[int, ...], str]]:
    """Validate and normalise a layout (name -> (per-network shape, dtype str)); ValueError when bad."""
    if not isinstance(layout, dict) or not layout:
        raise ValueError(f"layout must be a non-empty dict of name -> (shape, dtype); got {layout!r}")
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    for name, spec in layout.items():
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f"array name {name!r} must match {_NAME_RE.pattern} (it becomes a file name)")
        try:
            shape, dtype = spec
            shape = tuple(int(s) for s in shape)
            dt = np.dtype(dtype)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"layout[{name!r}] must be (shape tuple, numpy dtype str); got {spec!r}"
            ) from exc
        if any(s < 1 for s in shape):
            raise ValueError(f"layout[{name!r}] dimensions must be positive; got {shape}")
        if dt.hasobject or dt.fields is not None or dt.subdtype is not None:
            raise ValueError(
                f"layout[{name!r}] dtype {dt} is not a plain numeric dtype (cannot be memory-mapped)"
            )
        out[name] = (shape, dt.str if dt.byteorder not in ("=", "|") else dt.name)
    return out


def _layout_to_json(layout: Layout) -> dict[str, dict[str, Any]]:
    return {name: {"shape": list(shape), "dtype": dtype} for name, (shape, dtype) in layout.items()}


# ---------------------------------------------------------------------------------------------------- writer
class BankWriter:
    """Builds a bank shard by shard; resumable after a crash; exclusive via an ``fcntl`` lock.

    Usage::

        with BankWriter(path, config.to_dict(), config.content_hash(), n, layout) as w:
            for shard in plan:
                if shard.index not in w.done_shards():
                    w.write_shard(shard.index, shard.networks, arrays, rows)
            bank = w.finalize(seconds)

    Args:
        path: the bank directory (created if missing).
        config: the simulation config as a JSON-serialisable dict (``SimulationConfig.to_dict()``).
        config_hash: its content hash (``SimulationConfig.content_hash()``); identifies the bank.
        n_networks: networks in the bank (>= 1); the arrays' leading axis.
        layout: array name -> (per-network shape, numpy dtype str such as ``"float16"``).

    Raises:
        BankError: ``path`` is a file, a directory with foreign contents, a bank of another config or schema
            version, or is being built by another process (its lock is held).
        ValueError: bad ``n_networks``, ``layout``, ``config`` or ``config_hash``.
    """

    def __init__(
        self,
        path: Path,
        config: dict,
        config_hash: str,
        n_networks: int,
        layout: Layout,
    ) -> None:
        self.path = Path(path)
        if not isinstance(config_hash, str) or not config_hash:
            raise ValueError(f"config_hash must be a non-empty string; got {config_hash!r}")
        if isinstance(n_networks, bool) or not isinstance(n_networks, int | np.integer) or n_networks < 1:
            raise ValueError(f"n_networks must be a positive integer; got {n_networks!r}")
        try:
            _dumps(config)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config must be a JSON-serialisable dict: {exc}") from exc
        self.config = config
        self.hash = config_hash
        self.n_networks = int(n_networks)
        self.layout = _check_layout(layout)
        self._lock_file: IO[str] | None = None
        self._start = time.monotonic()
        self._last_commit = self._start
        self._written: set[int] = set()

        if self.path.exists() and not self.path.is_dir():
            raise BankError(f"bank path {self.path} exists and is not a directory")
        manifest = self._existing_manifest()
        self.path.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        try:
            self._shards.mkdir(exist_ok=True)
            self._clean_tmp()
            if manifest is None or not manifest.get("complete"):
                self._write_manifest(complete=False, arrays={}, seconds=0.0, extra={})
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ paths
    @property
    def _shards(self) -> Path:
        return self.path / SHARDS_DIR

    def _shard_npz(self, index: int) -> Path:
        return self._shards / f"shard-{index:05d}.npz"

    def _shard_json(self, index: int) -> Path:
        return self._shards / f"shard-{index:05d}.json"

    # ------------------------------------------------------------------ setup
    def _existing_manifest(self) -> dict | None:
        """The manifest already in ``path`` (None if there is none); BankError if it is not ours to write."""
        mpath = self.path / MANIFEST
        if not self.path.is_dir():
            return None
        if not mpath.exists():
            allowed = {MANIFEST, METADATA, ARRAYS_DIR, SHARDS_DIR, LOCK}
            foreign = sorted(
                p.name
                for p in self.path.iterdir()
                if p.name not in allowed and not p.name.endswith(TMP_SUFFIX)
            )
            if foreign:
                raise BankError(
                    f"bank path {self.path} is a non-empty directory that is not a bank "
                    f"(it holds {', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}); "
                    "pick another path"
                )
            return None
        try:
            manifest = _read_json(mpath)
        except (OSError, ValueError) as exc:
            raise BankError(
                f"bank {self.path} has an unreadable {MANIFEST} ({exc}); refusing to overwrite it"
            ) from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            fmt = manifest.get("format") if isinstance(manifest, dict) else None
            raise BankError(
                f"bank path {self.path} belongs to another config: its {MANIFEST} is not an lr-advisor "
                f"bank's (format {fmt!r}); pick another path"
            )
        if manifest.get("hash") != self.hash:
            raise BankError(
                f"bank {self.path} belongs to another config (hash {str(manifest.get('hash'))[:12]}, "
                f"expected {self.hash[:12]}); pick another path or delete it"
            )
        if manifest.get("schema_version") != SCHEMA_VERSION:
            version = manifest.get("schema_version")
            raise BankError(
                f"bank {self.path} has schema version {version!r}, this simulator writes "
                f"{SCHEMA_VERSION}; delete it and run `advisor simulate` again"
            )
        return manifest

    def _acquire_lock(self) -> None:
        lock_path = self.path / LOCK
        f = open(lock_path, "a+")  # held open (and locked) for the writer's lifetime
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            f.close()
            raise BankError(f"bank {self.path} is being built by another process (lock {lock_path})") from exc
        except BaseException:
            f.close()
            raise
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._lock_file = f

    def _clean_tmp(self) -> None:
        for d in (self.path, self._shards, self.path / ARRAYS_DIR):
            if d.is_dir():
                for p in d.glob(f"*{TMP_SUFFIX}"):
                    logger.debug("removing leftover temp file %s", p)
                    p.unlink(missing_ok=True)

    def _write_manifest(self, *, complete: bool, arrays: dict, seconds: float, extra: dict) -> None:
        manifest = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "hash": self.hash,
            "config": self.config,
            "complete": complete,
            "n_networks": self.n_networks,
            "arrays": arrays,
            "created": _now(),
            "seconds": float(seconds),
            "extra": extra,
        }
        _atomic_write_json(self.path / MANIFEST, manifest)

    def _check_open(self) -> None:
        if self._lock_file is None:
            raise BankError(f"the writer of bank {self.path} is closed (finalized or closed); open a new one")

    # ------------------------------------------------------------------ shards
    def _read_sidecar(self, index: int) -> dict | None:
        """The sidecar of shard ``index`` if the shard is committed and intact; else None.

        A shard that is present but damaged (bad sidecar, missing/truncated/modified npz, foreign layout) is
        logged as a warning and deleted, so it gets recomputed.
        """
        npz, side = self._shard_npz(index), self._shard_json(index)
        problem = None
        sidecar: Any = None
        try:
            sidecar = _read_json(side)
        except (OSError, ValueError) as exc:
            problem = f"unreadable sidecar ({exc})"
        if problem is None:
            problem = self._sidecar_problem(index, sidecar)
        if problem is None:
            if not npz.exists():
                problem = "its npz file is missing"
            elif npz.stat().st_size != sidecar["bytes"]:
                problem = f"its npz has {npz.stat().st_size} bytes, expected {sidecar['bytes']} (truncated?)"
            elif sha256_file(npz) != sidecar["sha256"]:
                problem = "its npz fails the sha256 check (corrupt)"
        if problem is None:
            return sidecar
        logger.warning(
            "bank %s: discarding shard %d (%s): %s; it will be recomputed", self.path, index, npz, problem
        )
        side.unlink(missing_ok=True)
        npz.unlink(missing_ok=True)
        return None

    def _sidecar_problem(self, index: int, sidecar: Any) -> str | None:
        if not isinstance(sidecar, dict):
            return "sidecar is not a JSON object"
        keys = {"shard_index", "network_indices", "rows", "sha256", "bytes", "layout", "seconds"}
        if not keys <= sidecar.keys():
            return f"sidecar lacks {sorted(keys - sidecar.keys())}"
        if sidecar["shard_index"] != index:
            return f"sidecar names shard {sidecar['shard_index']!r}"
        if sidecar["layout"] != _layout_to_json(self.layout):
            return "it was written with another array layout"
        idx = sidecar["network_indices"]
        if (
            not isinstance(idx, list)
            or not idx
            or not all(isinstance(i, int) and 0 <= i < self.n_networks for i in idx)
            or len(set(idx)) != len(idx)
        ):
            return f"bad network indices for a bank of {self.n_networks} networks"
        if not isinstance(sidecar["rows"], list) or len(sidecar["rows"]) != len(idx):
            return "metadata rows do not match its network indices"
        return None

    def _committed(self) -> dict[int, dict]:
        """Shard index -> sidecar for every intact committed shard (damaged ones are discarded)."""
        out: dict[int, dict] = {}
        if not self._shards.is_dir():
            return out
        sidecars: set[int] = set()
        npzs: set[int] = set()
        for p in self._shards.iterdir():
            m = _SHARD_RE.match(p.name)
            if m:
                (sidecars if m.group(2) == "json" else npzs).add(int(m.group(1)))
        for index in sorted(npzs - sidecars):
            # npz in place but the process died before its sidecar (the commit point): not a shard yet.
            logger.debug("bank %s: removing uncommitted shard file %s", self.path, self._shard_npz(index))
            self._shard_npz(index).unlink(missing_ok=True)
        for index in sorted(sidecars):
            sidecar = self._read_sidecar(index)
            if sidecar is not None:
                out[index] = sidecar
        return out

    def done_shards(self) -> set[int]:
        """Indices of the shards already committed and intact (their npz's sha256 verifies).

        A corrupt or truncated shard is logged (a warning naming it), deleted and not counted, so the caller
        recomputes it. Leftover ``*.tmp`` files are ignored.

        Returns:
            The set of shard indices.

        Raises:
            BankError: the writer is closed.
        """
        self._check_open()
        return set(self._committed())

    def write_shard(
        self,
        shard_index: int,
        network_indices: Sequence[int],
        arrays: dict[str, np.ndarray],
        rows: list[dict],
    ) -> None:
        """Commit one finished shard: its arrays (one npz) and its sidecar (indices, metadata rows, sha256).

        The npz is written to a temp file, fsynced and renamed into place; then the sidecar the same way. The
        sidecar is the commit point: a shard without one does not exist. Rewriting a shard index replaces it.

        Args:
            shard_index: the shard's index (>= 0); names its files.
            network_indices: the k networks of the shard, distinct, in ``[0, n_networks)``; row i of every
                array belongs to network ``network_indices[i]``.
            arrays: exactly the layout's names; ``arrays[name]`` has shape ``(k, *per_network_shape)`` and is
                cast to the layout dtype.
            rows: k dicts of JSON-serialisable scalars (numpy scalars are converted), the networks' metadata.

        Raises:
            ValueError: bad index, network indices, array names/shapes or rows.
            BankError: the writer is closed.
        """
        self._check_open()
        if isinstance(shard_index, bool) or not isinstance(shard_index, int | np.integer) or shard_index < 0:
            raise ValueError(f"shard_index must be a non-negative integer; got {shard_index!r}")
        shard_index = int(shard_index)
        idx = [int(i) for i in network_indices]
        k = len(idx)
        if k == 0:
            raise ValueError(f"shard {shard_index}: network_indices is empty")
        bad = [i for i in idx if not 0 <= i < self.n_networks]
        if bad:
            raise ValueError(
                f"shard {shard_index}: network indices {bad[:5]} are outside [0, {self.n_networks})"
            )
        if len(set(idx)) != k:
            raise ValueError(f"shard {shard_index}: network_indices lists a network twice")
        if set(arrays) != set(self.layout):
            missing = sorted(set(self.layout) - set(arrays))
            unexpected = sorted(set(arrays) - set(self.layout))
            raise ValueError(
                f"shard {shard_index}: arrays must be exactly {sorted(self.layout)}; "
                f"missing {missing}, unexpected {unexpected}"
            )
        cast: dict[str, np.ndarray] = {}
        for name, (shape, dtype) in self.layout.items():
            arr = np.asarray(arrays[name])
            if arr.shape != (k, *shape):
                raise ValueError(
                    f"shard {shard_index}: array {name!r} has shape {arr.shape}, expected {(k, *shape)}"
                )
            cast[name] = np.ascontiguousarray(arr.astype(dtype, copy=False))
        if not isinstance(rows, list) or len(rows) != k or not all(isinstance(r, dict) for r in rows):
            raise ValueError(f"shard {shard_index}: rows must be a list of {k} dicts (one per network)")
        try:
            _dumps(rows)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"shard {shard_index}: metadata rows are not JSON-serialisable: {exc}") from exc

        npz, side = self._shard_npz(shard_index), self._shard_json(shard_index)
        side.unlink(missing_ok=True)  # uncommit any previous version before replacing its npz

        def write_npz(f: IO[bytes]) -> None:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
                for name, arr in cast.items():
                    info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
                    with zf.open(info, "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, arr, allow_pickle=False)

        _atomic_write(npz, write_npz)
        now = time.monotonic()
        sidecar = {
            "shard_index": shard_index,
            "network_indices": idx,
            "rows": rows,
            "sha256": sha256_file(npz),
            "bytes": npz.stat().st_size,
            "layout": _layout_to_json(self.layout),
            "seconds": now - self._last_commit,
        }
        _atomic_write_json(side, sidecar)
        self._last_commit = now
        self._written.add(shard_index)
        logger.debug("bank %s: committed shard %d (%d networks)", self.path, shard_index, k)

    # ------------------------------------------------------------------ finalize
    def finalize(self, seconds: float, extra: dict | None = None) -> TrajectoryBank:
        """Assemble the committed shards into the final bank, then release the lock.

        Each ``arrays/<name>.npy`` is filled shard by shard with positioned writes (at most one shard in RAM),
        fsynced, hashed and renamed into place; then ``metadata.json``; then ``manifest.json`` with
        ``complete = true`` (the commit point); then ``shards/`` is removed.

        Args:
            seconds: wall-clock build time of this run. The manifest records it plus the time of earlier
                (interrupted) runs, as measured per shard by their writers.
            extra: JSON-serialisable extra fields for the manifest (e.g. the code version).

        Returns:
            The finished bank, opened with :func:`load_bank`.

        Raises:
            BankError: some networks are not covered by a committed shard, or covered twice; the writer is
                closed.
            ValueError: ``extra`` is not JSON-serialisable.
        """
        self._check_open()
        extra = dict(extra or {})
        try:
            _dumps(extra)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"extra must be JSON-serialisable: {exc}") from exc
        shards = self._committed()
        counts = np.zeros(self.n_networks, dtype=np.int64)
        for sidecar in shards.values():
            counts[sidecar["network_indices"]] += 1
        n_missing = int(np.count_nonzero(counts == 0))
        if n_missing:
            first = np.flatnonzero(counts == 0)[:5].tolist()
            raise BankError(
                f"bank {self.path}: {n_missing} of {self.n_networks} networks are missing (no committed "
                f"shard covers them, e.g. {first}); write their shards before finalize"
            )
        twice = np.flatnonzero(counts > 1)
        if twice.size:
            raise BankError(
                f"bank {self.path}: {twice.size} networks are covered by more than one shard (e.g. "
                f"{twice[:5].tolist()}); delete {self._shards} and build again"
            )

        # A previously complete bank is being rebuilt: uncommit it before touching its arrays.
        self._write_manifest(complete=False, arrays={}, seconds=0.0, extra={})
        arrays_dir = self.path / ARRAYS_DIR
        arrays_dir.mkdir(exist_ok=True)
        tmp_paths = {name: arrays_dir / f"{name}.npy{TMP_SUFFIX}" for name in self.layout}
        # Rows are written with pwrite, not through a writable memory map: a map's dirty pages count towards
        # this process's resident memory until it is unmapped, so filling the paper preset's 1.4 GB bank through
        # maps peaked at 1.9 GB; this way at most one shard's array is in memory.
        files: dict[str, tuple[IO[bytes], int, int]] = {}  # name -> (file, data offset, bytes per network)
        try:
            for name, (shape, dtype) in self.layout.items():
                header = np.lib.format.open_memmap(
                    tmp_paths[name], mode="w+", dtype=np.dtype(dtype), shape=(self.n_networks, *shape)
                )  # writes the .npy header and sizes the (sparse) file; no page is touched
                offset = int(header.offset)
                del header
                row_bytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
                files[name] = (open(tmp_paths[name], "r+b"), offset, row_bytes)  # closed below
            for index in sorted(shards):
                sel = np.asarray(shards[index]["network_indices"], dtype=np.int64)
                with np.load(self._shard_npz(index), allow_pickle=False) as npz:
                    for name, (f, offset, row_bytes) in files.items():
                        shape, dtype = self.layout[name]
                        data = npz[name]
                        if data.shape != (sel.size, *shape) or data.dtype != np.dtype(dtype):
                            raise BankError(
                                f"bank {self.path}: shard {self._shard_npz(index)} holds {name!r} as "
                                f"{data.dtype}{data.shape}, expected {np.dtype(dtype)}{(sel.size, *shape)}; "
                                f"delete it and build again"
                            )
                        data = np.ascontiguousarray(data)
                        for j, i in enumerate(sel.tolist()):
                            _pwrite_all(f.fileno(), data[j : j + 1].data.cast("B"), offset + i * row_bytes)
                        del data
            manifest_arrays: dict[str, dict[str, Any]] = {}
            for name, (f, _, _) in list(files.items()):
                f.flush()
                os.fsync(f.fileno())
                f.close()
                del files[name]
                tmp = tmp_paths[name]
                shape, dtype = self.layout[name]
                manifest_arrays[name] = {
                    "shape": [self.n_networks, *shape],
                    "dtype": dtype,
                    "sha256": sha256_file(tmp),
                    "bytes": tmp.stat().st_size,
                }
            for name, tmp in tmp_paths.items():
                os.replace(tmp, arrays_dir / f"{name}.npy")
            _fsync_dir(arrays_dir)
        except BaseException:
            for f, _, _ in files.values():
                f.close()
            for tmp in tmp_paths.values():
                tmp.unlink(missing_ok=True)
            raise
        for p in arrays_dir.glob("*.npy"):
            if p.stem not in self.layout:
                p.unlink()

        rows: list[Any] = [None] * self.n_networks
        for sidecar in shards.values():
            for i, row in zip(sidecar["network_indices"], sidecar["rows"], strict=True):
                rows[i] = row
        _atomic_write_json(self.path / METADATA, rows)

        earlier = sum(float(s["seconds"]) for i, s in shards.items() if i not in self._written)
        self._write_manifest(
            complete=True, arrays=manifest_arrays, seconds=float(seconds) + earlier, extra=extra
        )
        shutil.rmtree(self._shards, ignore_errors=True)
        self.close()
        logger.info(
            "bank %s: finalized %d networks, %d arrays, %.1f s",
            self.path,
            self.n_networks,
            len(self.layout),
            float(seconds) + earlier,
        )
        return load_bank(self.path)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Release the lock (idempotent). Committed shards stay on disk for the next writer to resume from."""
        f, self._lock_file = self._lock_file, None
        if f is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            finally:
                f.close()

    def __enter__(self) -> BankWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        lock_file = getattr(self, "_lock_file", None)
        if lock_file is not None:
            self.close()


# ---------------------------------------------------------------------------------------------------- reader
@dataclass(frozen=True, eq=False)
class TrajectoryBank:
    """A finished bank; arrays are memory-mapped read-only on first access.

    Attributes:
        path: the bank directory.
        hash: the config hash it was built for.
        config: the simulation config as a dict.
        manifest: the parsed ``manifest.json``.
        metadata: one row per network, index = network index (named ``network``).
    """

    path: Path
    hash: str
    config: dict
    manifest: dict
    metadata: pd.DataFrame = field(repr=False)
    _cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def n_networks(self) -> int:
        return int(self.manifest["n_networks"])

    @property
    def array_names(self) -> list[str]:
        """Names of the recorded arrays, sorted."""
        return sorted(self.manifest["arrays"])

    def _array_path(self, name: str) -> Path:
        return self.path / ARRAYS_DIR / f"{name}.npy"

    def __getitem__(self, name: str) -> np.ndarray:
        """The array ``name``, memory-mapped read-only; shape ``(n_networks, *per_network_shape)``.

        Raises:
            BankError: no such array, or its file does not match the manifest.
        """
        if name in self._cache:
            return self._cache[name]
        info = self.manifest["arrays"].get(name) if isinstance(name, str) else None
        if info is None:
            raise BankError(
                f"bank {self.path} has no array {name!r}; available: {', '.join(self.array_names)}"
            )
        path = self._array_path(name)
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise BankError(f"bank {self.path}: cannot read array file {path}: {exc}") from exc
        if list(arr.shape) != list(info["shape"]) or arr.dtype != np.dtype(info["dtype"]):
            raise BankError(
                f"bank {self.path}: {path} holds {arr.dtype}{arr.shape}, manifest says "
                f"{info['dtype']}{tuple(info['shape'])}"
            )
        self._cache[name] = arr
        return arr

    def __contains__(self, name: object) -> bool:
        return name in self.manifest["arrays"]

    def size_bytes(self) -> int:
        """Total bytes on disk of the array files, ``metadata.json`` and ``manifest.json``."""
        files = [self._array_path(n) for n in self.manifest["arrays"]]
        files += [self.path / METADATA, self.path / MANIFEST]
        return sum(p.stat().st_size for p in files)

    def verify(self) -> None:
        """Recompute the sha256 of every array file and compare it with the manifest.

        Raises:
            BankError: naming the first corrupt (or missing) file.
        """
        for name in self.array_names:
            path = self._array_path(name)
            try:
                digest = sha256_file(path)
            except OSError as exc:
                raise BankError(f"bank {self.path}: cannot read {path}: {exc}") from exc
            if digest != self.manifest["arrays"][name]["sha256"]:
                raise BankError(
                    f"bank {self.path}: {path} is corrupt (sha256 differs from the manifest); "
                    f"delete the bank and run `advisor simulate` again"
                )


def _manifest_problem(manifest: dict) -> str | None:
    """What is structurally wrong with a complete manifest, or None."""
    if not isinstance(manifest.get("hash"), str):
        return "hash is not a string"
    if not isinstance(manifest.get("config"), dict):
        return "config is not an object"
    n = manifest.get("n_networks")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        return f"n_networks is {n!r}"
    arrays = manifest.get("arrays")
    if not isinstance(arrays, dict) or not arrays:
        return "arrays is empty or not an object"
    for name, info in arrays.items():
        try:
            ok = (
                isinstance(name, str)
                and _NAME_RE.match(name) is not None
                and isinstance(info["sha256"], str)
                and isinstance(info["bytes"], int)
                and int(info["shape"][0]) == n
                and info["bytes"] >= _npy_data_bytes(info["shape"], info["dtype"])
            )
        except (KeyError, TypeError, ValueError, IndexError):
            ok = False
        if not ok:
            return f"entry for array {name!r} is malformed"
    return None


def load_bank(path: str | Path, *, verify: bool = False) -> TrajectoryBank:
    """Open a finished bank.

    Always checks cheaply that every array file exists with the size the manifest records; with ``verify``
    also recomputes every file's sha256.

    Args:
        path: the bank directory.
        verify: also check the sha256 of every array file (reads every byte).

    Returns:
        The bank.

    Raises:
        BankError: (one line naming the path) the path is missing or not a directory; it has no manifest
            (not a bank); the manifest is not JSON or not an lr-advisor bank's; its schema version differs
            from ``SCHEMA_VERSION``; the bank is incomplete; the metadata or an array file is missing,
            truncated or (with ``verify``) corrupt.
    """
    path = Path(path)
    if not path.exists():
        raise BankError(f"bank {path} does not exist")
    if not path.is_dir():
        raise BankError(f"bank {path} is not a directory")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise BankError(f"{path} is not a bank (no {MANIFEST})")
    try:
        manifest = _read_json(mpath)
    except (OSError, ValueError) as exc:
        raise BankError(f"{path} is not an lr-advisor bank ({MANIFEST} is not valid JSON: {exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        fmt = manifest.get("format") if isinstance(manifest, dict) else None
        raise BankError(
            f"{path} is not an lr-advisor bank ({MANIFEST} format is {fmt!r}, expected {FORMAT!r})"
        )
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BankError(
            f"bank {path} has schema version {version!r} but this simulator reads schema version "
            f"{SCHEMA_VERSION}; delete it and run `advisor simulate` again"
        )
    if manifest.get("complete") is not True:
        raise BankError(f"bank {path} is incomplete: run `advisor simulate` again to resume")
    problem = _manifest_problem(manifest)
    if problem:
        raise BankError(f"bank {path} has a malformed {MANIFEST}: {problem}")

    for name, info in manifest["arrays"].items():
        apath = path / ARRAYS_DIR / f"{name}.npy"
        if not apath.is_file():
            raise BankError(f"bank {path}: array file {apath} is missing; run `advisor simulate` again")
        size = apath.stat().st_size
        if size != info["bytes"]:
            raise BankError(
                f"bank {path}: array file {apath} has {size} bytes, the manifest says {info['bytes']} "
                f"(truncated or modified); delete the bank and run `advisor simulate` again"
            )

    n = manifest["n_networks"]
    try:
        rows = _read_json(path / METADATA)
    except (OSError, ValueError) as exc:
        raise BankError(f"bank {path}: cannot read {METADATA}: {exc}") from exc
    if not isinstance(rows, list) or len(rows) != n or not all(isinstance(r, dict) for r in rows):
        raise BankError(f"bank {path}: {METADATA} must be a list of {n} objects (one per network)")
    metadata = pd.DataFrame(rows)
    metadata.index = pd.RangeIndex(n, name="network")

    bank = TrajectoryBank(
        path=path, hash=manifest["hash"], config=manifest["config"], manifest=manifest, metadata=metadata
    )
    if verify:
        bank.verify()
    return bank


def bank_is_complete(path: Path, config_hash: str) -> bool:
    """Whether ``path`` holds a complete bank of ``config_hash`` (the cache-hit test; cheap: no hashing).

    True when the manifest parses, is an lr-advisor bank of the current schema version, is complete, has the
    same hash, and every array file exists with the recorded size.

    Args:
        path: the bank directory.
        config_hash: the expected config hash.

    Returns:
        True if the bank can be used as is.
    """
    path = Path(path)
    try:
        manifest = _read_json(path / MANIFEST)
        if not (
            isinstance(manifest, dict)
            and manifest.get("format") == FORMAT
            and manifest.get("schema_version") == SCHEMA_VERSION
            and manifest.get("complete") is True
            and manifest.get("hash") == config_hash
            and _manifest_problem(manifest) is None
            and (path / METADATA).is_file()
        ):
            return False
        return all(
            (path / ARRAYS_DIR / f"{name}.npy").stat().st_size == info["bytes"]
            for name, info in manifest["arrays"].items()
        )
    except (OSError, ValueError):
        return False
