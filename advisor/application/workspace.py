"""The workspace: one directory that holds trajectory banks, the MLflow store and reports.

The CLI picks it from ``--workspace DIR``, else the environment variable ``ADVISOR_WORKSPACE``, else the
current directory. :meth:`Workspace.open` checks that it is (or can become) a writable directory before
anything is written, and creates nothing in a location it rejects.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from advisor.errors import AdvisorError

ENV_VAR = "ADVISOR_WORKSPACE"
"""Environment variable naming the default workspace."""

_PROBE_PREFIX = ".advisor-probe-"
T = TypeVar("T")


@dataclass(frozen=True)
class Workspace:
    """A workspace directory and its fixed layout.

    Attributes:
        root: the workspace directory (absolute).
    """

    root: Path

    @property
    def banks(self) -> Path:
        """Trajectory banks, one per simulation config hash."""
        return self.root / "banks"

    @property
    def mlflow(self) -> Path:
        """The local MLflow tracking store (SQLite database and artifacts)."""
        return self.root / "mlflow"

    @property
    def reports(self) -> Path:
        """Rendered reports (Markdown, HTML, PDF)."""
        return self.root / "reports"

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Workspace:
        """Return the workspace at ``path``, creating the directory if it is missing.

        The directory (or, when it does not exist yet, its nearest existing ancestor) is probed by creating
        and removing a temporary file, so permissions are tested as the operating system applies them (also
        for root, read-only mounts and ACLs).

        Args:
            path: the workspace directory; ``~`` is expanded and relative paths are taken from the current
                directory.

        Returns:
            The workspace, whose root exists and is writable.

        Raises:
            AdvisorError: ``workspace <path> is not writable: <reason>`` when the path is a file, lies under a
                file, or cannot be created or written. Nothing is created in that case.
        """
        root = Path(os.path.abspath(Path(path).expanduser()))

        def fail(reason: str) -> AdvisorError:
            return AdvisorError(f"workspace {root} is not writable: {reason}")

        if root.exists():
            if not root.is_dir():
                raise fail("it is a file, not a directory")
            _probe(root, fail)
            return cls(root)
        ancestor = nearest_existing(root.parent)
        if not ancestor.is_dir():
            raise fail(f"{ancestor} is a file, not a directory")
        _probe(ancestor, fail)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise fail(e.strerror or str(e)) from None
        _probe(root, fail)
        return cls(root)


def nearest_existing(path: Path) -> Path:
    """``path`` if it exists, else its nearest existing ancestor."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def probe_writable(directory: Path) -> str | None:
    """Create and remove a temporary file in ``directory`` (so permissions are tested as the operating system
    applies them, also for root, read-only mounts and ACLs); the operating system's reason if that is impossible
    (``Permission denied``), None if it worked."""
    try:
        fd, name = tempfile.mkstemp(prefix=_PROBE_PREFIX, dir=directory)
    except OSError as e:
        return e.strerror or str(e)
    os.close(fd)
    os.unlink(name)
    return None


def writable_dir_problem(directory: Path) -> str | None:
    """Why ``directory`` (or, while missing, its nearest existing ancestor) cannot be written, naming that
    directory (``/x is a file, not a directory``, ``/x: Permission denied``); None if it can."""
    existing = nearest_existing(directory)
    if not existing.is_dir():
        return f"{existing} is a file, not a directory"
    reason = probe_writable(existing)
    return None if reason is None else f"{existing}: {reason}"


def _probe(directory: Path, fail: Callable[[str], AdvisorError]) -> None:
    """Probe ``directory`` (:func:`probe_writable`); raise ``fail(reason)`` if it cannot be written."""
    reason = probe_writable(directory)
    if reason is not None:
        raise fail(reason)


def document_root(doc: Mapping[str, Any]) -> Path | None:
    """The workspace a plan or comparison document was written in: its ``"workspace"``, or for documents from
    before that key, the folder above ``reports/<run id>/`` of its reports (None when neither is known)."""
    if doc.get("workspace"):
        return Path(str(doc["workspace"]))
    for path in (doc.get("reports") or {}).values():
        parts = Path(str(path)).parts
        if len(parts) > 3 and parts[-3] == "reports":
            return Path(*parts[:-3])
    return None


def relocate_document(doc: T, root: Path) -> T:
    """``doc`` with every path (and ``file://``, ``sqlite:///``, ``journal:`` URI) inside the workspace it was
    written in (:func:`document_root`) rebased onto the workspace ``root`` in use, so a copied or moved workspace
    reports its own files. A new object: ``doc`` itself is not changed."""
    old = document_root(doc) if isinstance(doc, Mapping) else None
    return doc if old is None else rebase_paths(doc, old, root)


def rebase_paths(value: T, old: Path, new: Path) -> T:
    """``value`` (text, or lists and mappings of it) with every path inside ``old`` rebased onto ``new``.

    A path counts where the old root starts it: at the start of the text, after a space, a quote, ``=`` or a
    URI's ``:`` or ``/`` (``file:///OLD/...``), and is followed by ``/``, a space, a quote or the end. Paths
    outside ``old`` (a bank elsewhere, a server) are kept as they are.
    """
    before, after = str(old).rstrip("/"), str(new).rstrip("/")
    if before == after:
        return value
    pattern = re.compile(r"(?:(?<=^)|(?<=[\s'\"=:/]))" + re.escape(before) + r"(?=/|$|[\s'\"])")

    def rebase(item: Any) -> Any:
        if isinstance(item, str):
            return pattern.sub(lambda _: after, item)
        if isinstance(item, Mapping):
            return {k: rebase(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return type(item)(rebase(v) for v in item)
        return item

    return rebase(value)
