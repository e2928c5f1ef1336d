"""Tasks the simulated networks learn, and curricula that order their training examples.

A :class:`Task` builds one fixed, deterministic :class:`TaskData` (train/test split, targets, per-example
difficulty); every input is 64 features of order 1, viewable as a 1x8x8 image. A :class:`Curriculum` turns a
task's training set into the mini-batch index sequence of a whole training run, drawn from an explicit
``numpy.random.Generator``.

Both kinds are registered as *instances*: ``TASKS.get("digits").load()``,
``CURRICULA.get("iid").batch_indices(data, n_steps, batch_size, rng)``.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import ClassVar, final

import numpy as np

from simulator.errors import ConfigError
from simulator.registry import Registry

KINDS = ("classification", "regression", "autoencoding")
"""Allowed values of :attr:`TaskData.kind`."""

N_FEATURES = 64
"""Every task's input dimension (an 8x8 image's worth)."""

RAMP_END = 0.6
"""Fraction of training at which the growing curricula (class-incremental, easy-to-hard) reach full size."""

_DIGITS_SPLIT_SEED = 0
_GAUSSIAN_MIXTURE_SEED = 1_2345
_TEACHER_STUDENT_SEED = 5_4321


@dataclass(frozen=True, eq=False)
class TaskData:
    """One task's fixed data. Arrays are private read-only copies; validated on construction.

    Attributes:
        key: the task's registry key.
        kind: ``"classification"``, ``"regression"`` or ``"autoencoding"``.
        x_train: (n_train, 64) float32 inputs, features of order 1.
        y_train: classification: (n_train,) int64 labels; otherwise (n_train, n_outputs) float32 targets.
        x_test: (n_test, 64) float32 inputs.
        y_test: like ``y_train``, for the test split.
        labels_train: (n_train,) int64 class of each training example, or None if the task has no classes.
        labels_test: (n_test,) int64 class of each test example, or None.
        difficulty_train: (n_train,) float64, higher = harder (orders the easy-to-hard curriculum).
        n_outputs: number of classes for classification; output dimensions otherwise.
        n_classes: number of classes; 0 when the task has none.
        metric: ``"accuracy"`` (classification) or ``"r2"`` (regression, autoencoding).
        chance: chance level of the metric: ``1 / n_classes`` for accuracy, 0.0 for r2.
    """

    key: str
    kind: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels_train: np.ndarray | None
    labels_test: np.ndarray | None
    difficulty_train: np.ndarray
    n_outputs: int
    n_classes: int
    metric: str
    chance: float

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                frozen = np.array(value, copy=True)
                frozen.setflags(write=False)
                object.__setattr__(self, f.name, frozen)
        self._validate()

    def _validate(self) -> None:
        def fail(msg: str) -> None:
            raise ValueError(f"task data {self.key!r}: {msg}")

        if self.kind not in KINDS:
            fail(f"kind must be one of {KINDS}; got {self.kind!r}")
        n_train, n_test = len(self.x_train), len(self.x_test)
        for name, x, n in (("x_train", self.x_train, n_train), ("x_test", self.x_test, n_test)):
            if x.shape != (n, N_FEATURES) or x.dtype != np.float32:
                fail(f"{name} must be ({n}, {N_FEATURES}) float32; got {x.shape} {x.dtype}")
        for name, y, n in (("y_train", self.y_train, n_train), ("y_test", self.y_test, n_test)):
            if self.kind == "classification":
                if y.shape != (n,) or y.dtype != np.int64:
                    fail(f"{name} must be ({n},) int64; got {y.shape} {y.dtype}")
            elif y.shape != (n, self.n_outputs) or y.dtype != np.float32:
                fail(f"{name} must be ({n}, {self.n_outputs}) float32; got {y.shape} {y.dtype}")
        if (self.labels_train is None) != (self.labels_test is None):
            fail("labels_train and labels_test must both be set or both be None")
        for name, lab, n in (
            ("labels_train", self.labels_train, n_train),
            ("labels_test", self.labels_test, n_test),
        ):
            if lab is not None and (lab.shape != (n,) or lab.dtype != np.int64):
                fail(f"{name} must be ({n},) int64; got {lab.shape} {lab.dtype}")
        if self.difficulty_train.shape != (n_train,) or self.difficulty_train.dtype != np.float64:
            fail(f"difficulty_train must be ({n_train},) float64")
        has_labels = self.labels_train is not None
        if has_labels != (self.n_classes > 0):
            fail("n_classes must be > 0 exactly when labels are given")
        if self.kind == "classification":
            if not has_labels or self.n_outputs != self.n_classes:
                fail("classification needs labels and n_outputs == n_classes")
            if self.metric != "accuracy" or not math.isclose(self.chance, 1.0 / self.n_classes):
                fail("classification needs metric 'accuracy' and chance 1/n_classes")
        elif self.metric != "r2" or self.chance != 0.0:
            fail(f"{self.kind} needs metric 'r2' and chance 0.0")

    @property
    def n_train(self) -> int:
        """Number of training examples."""
        return len(self.x_train)

    @property
    def n_test(self) -> int:
        """Number of test examples."""
        return len(self.x_test)

    def probe_indices(self, n: int) -> np.ndarray:
        """Fixed probe stimuli from the test split.

        With class labels the probes go round robin over the classes (in increasing label order): the first
        test example of every class, then the second of every class, and so on, so each class appears
        ``n // n_classes`` or one more times. Without labels they are the first ``n`` test examples.

        Args:
            n: number of probes, ``0 <= n <= n_test``.

        Returns:
            (n,) int64 distinct indices into ``x_test``; the same on every call.

        Raises:
            ConfigError: if ``n`` is out of range.
        """
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 0 <= n <= self.n_test:
            raise ConfigError(f"number of probes must be an integer in [0, {self.n_test}]; got {n!r}")
        if self.labels_test is None:
            return np.arange(n, dtype=np.int64)
        labels = self.labels_test
        by_class = np.argsort(labels, kind="stable")  # test indices grouped by class, original order within
        sorted_labels = labels[by_class]
        starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
        rank = np.arange(len(labels)) - starts  # position of each example within its class
        order = np.lexsort((sorted_labels, rank))  # by rank, then by class
        return by_class[order[:n]].astype(np.int64)


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


# ---------------------------------------------------------------------------------------------- tasks


class Task(ABC):
    """A learning problem: 64 input features, a fixed train/test split, targets and per-example difficulty.

    Subclasses set the class attributes and implement :meth:`_build`; :meth:`load` caches the result.
    """

    key: ClassVar[str]
    kind: ClassVar[str]
    description: ClassVar[str]
    """One-line human description."""
    input_shape: ClassVar[tuple[int, int, int]] = (1, 8, 8)
    """The 64 input features viewed as a (channels, height, width) image."""
    has_classes: ClassVar[bool]
    n_outputs: ClassVar[int]

    @property
    def metric(self) -> str:
        """The performance measure: ``"accuracy"`` for classification, ``"r2"`` otherwise."""
        return "accuracy" if self.kind == "classification" else "r2"

    def load(self) -> TaskData:
        """The task's data: deterministic (fixed internal seed), built once per process, arrays read-only.

        Returns:
            the :class:`TaskData` (the same object on every call).
        """
        return _load_cached(type(self))

    @abstractmethod
    def _build(self) -> TaskData:
        """Build the task's data from scratch (called once per process by :meth:`load`)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


@functools.cache
def _load_cached(task_type: type[Task]) -> TaskData:
    data = task_type()._build()
    if data.key != task_type.key or data.kind != task_type.kind or data.n_outputs != task_type.n_outputs:
        raise RuntimeError(f"task {task_type.key!r} built data that disagrees with its class attributes")
    if (data.labels_train is not None) != task_type.has_classes:
        raise RuntimeError(f"task {task_type.key!r}: has_classes disagrees with its labels")
    return data


@functools.cache
def _digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits, pixels / 16, split 80/20 stratified (random_state 0).

    Returns:
        x_train (1437, 64) float32, x_test (360, 64) float32, labels_train (1437,) int64,
        labels_test (360,) int64; all read-only.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=_DIGITS_SPLIT_SEED
    )
    return (
        _frozen(np.ascontiguousarray(x_tr)),
        _frozen(np.ascontiguousarray(x_te)),
        _frozen(np.ascontiguousarray(y_tr)),
        _frozen(np.ascontiguousarray(y_te)),
    )


TASKS: Registry[Task] = Registry("task")
"""Registered :class:`Task` instances, by key."""


@final
class Digits(Task):
    """Handwritten digits (scikit-learn's 8x8 set), 10-way classification."""

    key = "digits"
    kind = "classification"
    description = "8x8 handwritten digits (sklearn), pixels/16, 10-way classification, stratified 80/20 split"
    has_classes = True
    n_outputs = 10

    def _build(self) -> TaskData:
        x_tr, x_te, y_tr, y_te = _digits_split()
        # Difficulty: distance to the own class centroid, relative to that class's mean distance.
        centroids = np.stack([x_tr[y_tr == c].mean(axis=0, dtype=np.float64) for c in range(10)])
        dist = np.linalg.norm(x_tr - centroids[y_tr], axis=1)
        mean_dist = np.bincount(y_tr, weights=dist, minlength=10) / np.bincount(y_tr, minlength=10)
        return TaskData(
            key=self.key,
            kind=self.kind,
            x_train=x_tr,
            y_train=y_tr,
            x_test=x_te,
            y_test=y_te,
            labels_train=y_tr,
            labels_test=y_te,
            difficulty_train=(dist / mean_dist[y_tr]).astype(np.float64),
            n_outputs=10,
            n_classes=10,
            metric="accuracy",
            chance=0.1,
        )


@final
class GaussianMixture(Task):
    """10 classes in 64 dimensions, each a mixture of 3 Gaussian components; not linearly separable.

    Class centres ~ N(0, 0.1^2 I), component centres = class centre + N(0, 0.55^2 I), examples = component
    centre + N(0, I), all divided by the total SD sqrt(1 + 0.55^2 + 0.1^2) so features have SD about 1. A
    linear classifier (LogisticRegression) reaches 76% test accuracy, a 128-unit one-hidden-layer MLP 88%.
    """

    key = "gaussian_mixture"
    kind = "classification"
    description = "10 classes x 3 Gaussian components in 64-d; linear ~76% test accuracy, MLP ~88%"
    has_classes = True
    n_outputs = 10

    N_CLASSES: ClassVar[int] = 10
    N_COMPONENTS: ClassVar[int] = 3
    N_TRAIN: ClassVar[int] = 2000
    N_TEST: ClassVar[int] = 500
    CLASS_SD: ClassVar[float] = 0.1
    COMPONENT_SD: ClassVar[float] = 0.55
    NOISE_SD: ClassVar[float] = 1.0

    def _build(self) -> TaskData:
        rng = np.random.default_rng(_GAUSSIAN_MIXTURE_SEED)
        k, m, d = self.N_CLASSES, self.N_COMPONENTS, N_FEATURES
        scale = math.sqrt(self.NOISE_SD**2 + self.COMPONENT_SD**2 + self.CLASS_SD**2)
        class_centres = rng.normal(0.0, self.CLASS_SD, (k, 1, d))
        centres = (class_centres + rng.normal(0.0, self.COMPONENT_SD, (k, m, d))) / scale  # (k, m, d)

        def sample(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            labels = rng.permutation(np.arange(n) % k).astype(np.int64)  # balanced classes
            comp = rng.integers(0, m, n)
            x = centres[labels, comp] + rng.normal(0.0, self.NOISE_SD / scale, (n, d))
            return x, labels, comp

        x_tr, y_tr, comp_tr = sample(self.N_TRAIN)
        x_te, y_te, _ = sample(self.N_TEST)
        # Difficulty: distance to own component centre / distance to the nearest other-class component centre.
        dist = np.linalg.norm(x_tr[:, None, None, :] - centres[None], axis=-1)  # (n_train, k, m)
        own = dist[np.arange(len(x_tr)), y_tr, comp_tr]
        other = np.where(np.arange(k)[None, :, None] == y_tr[:, None, None], np.inf, dist).min(axis=(1, 2))
        return TaskData(
            key=self.key,
            kind=self.kind,
            x_train=x_tr.astype(np.float32),
            y_train=y_tr,
            x_test=x_te.astype(np.float32),
            y_test=y_te,
            labels_train=y_tr,
            labels_test=y_te,
            difficulty_train=own / other,
            n_outputs=k,
            n_classes=k,
            metric="accuracy",
            chance=1.0 / k,
        )


@final
class TeacherStudent(Task):
    """Regression onto a fixed random teacher MLP 64 -> 32 (tanh) -> 10, with standardized noisy targets."""

    key = "teacher_student"
    kind = "regression"
    description = "regression onto a random tanh teacher MLP 64-32-10; targets standardized + noise SD 0.1"
    has_classes = False
    n_outputs = 10

    N_TRAIN: ClassVar[int] = 2000
    N_TEST: ClassVar[int] = 500
    N_HIDDEN: ClassVar[int] = 32
    GAIN: ClassVar[float] = 1.5
    """Teacher first-layer weight SD times sqrt(fan-in): > 1 puts the tanh in its nonlinear range."""
    NOISE_SD: ClassVar[float] = 0.1

    def _build(self) -> TaskData:
        rng = np.random.default_rng(_TEACHER_STUDENT_SEED)
        d, h, o = N_FEATURES, self.N_HIDDEN, self.n_outputs
        w1 = rng.normal(0.0, self.GAIN / math.sqrt(d), (d, h))
        b1 = rng.normal(0.0, 0.1, h)
        w2 = rng.normal(0.0, 1.0 / math.sqrt(h), (h, o))
        x_tr = rng.normal(0.0, 1.0, (self.N_TRAIN, d)).astype(np.float32)
        x_te = rng.normal(0.0, 1.0, (self.N_TEST, d)).astype(np.float32)

        def teacher(x: np.ndarray) -> np.ndarray:
            return np.tanh(x.astype(np.float64) @ w1 + b1) @ w2

        clean_tr, clean_te = teacher(x_tr), teacher(x_te)
        mean, sd = clean_tr.mean(axis=0), clean_tr.std(axis=0)
        y_tr = (clean_tr - mean) / sd + rng.normal(0.0, self.NOISE_SD, clean_tr.shape)
        y_te = (clean_te - mean) / sd + rng.normal(0.0, self.NOISE_SD, clean_te.shape)
        return TaskData(
            key=self.key,
            kind=self.kind,
            x_train=x_tr,
            y_train=y_tr.astype(np.float32),
            x_test=x_te,
            y_test=y_te.astype(np.float32),
            labels_train=None,
            labels_test=None,
            difficulty_train=np.linalg.norm(y_tr, axis=1),
            n_outputs=o,
            n_classes=0,
            metric="r2",
            chance=0.0,
        )


@final
class Autoencoding(Task):
    """Reconstruct the digits inputs (same split as ``digits``); digit labels kept for class curricula."""

    key = "autoencoding"
    kind = "autoencoding"
    description = "reconstruct the 8x8 digits (64 outputs, r2); digit labels kept for class-incremental"
    has_classes = True
    n_outputs = N_FEATURES

    def _build(self) -> TaskData:
        x_tr, x_te, y_tr, y_te = _digits_split()
        dist = np.linalg.norm(x_tr - x_tr.mean(axis=0, dtype=np.float64), axis=1)
        return TaskData(
            key=self.key,
            kind=self.kind,
            x_train=x_tr,
            y_train=x_tr,
            x_test=x_te,
            y_test=x_te,
            labels_train=y_tr,
            labels_test=y_te,
            difficulty_train=dist.astype(np.float64),
            n_outputs=N_FEATURES,
            n_classes=10,
            metric="r2",
            chance=0.0,
        )


for _task_type in (Digits, GaussianMixture, TeacherStudent, Autoencoding):
    TASKS.add(_task_type.key, _task_type())


# ------------------------------------------------------------------------------------------- curricula


def _check_schedule(n_steps: int, batch_size: int) -> None:
    for name, value, lo in (("n_steps", n_steps, 0), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < lo:
            raise ConfigError(f"{name} must be an integer >= {lo}; got {value!r}")


def _ramp(n_steps: int, start: float, end: float) -> np.ndarray:
    """Linear ramp from ``start`` at step 0 to ``end`` at ``RAMP_END`` of training, then flat.

    Returns:
        (n_steps,) float64 values.
    """
    t = np.arange(n_steps, dtype=np.float64)
    frac = np.minimum(t / (RAMP_END * n_steps), 1.0) if n_steps else t
    return start + (end - start) * frac


def _draw_from_prefix(
    ordered: np.ndarray, pool_sizes: np.ndarray, batch_size: int, rng: np.random.Generator
) -> np.ndarray:
    """Each step's batch uniformly (with replacement) from the first ``pool_sizes[t]`` entries of ``ordered``.

    Args:
        ordered: (n,) int64 example indices, in the order the pool grows.
        pool_sizes: (n_steps,) int pool size per step, each in [1, n].
        batch_size: examples per step.
        rng: the random source.

    Returns:
        (n_steps, batch_size) int64 indices.
    """
    positions = rng.integers(0, pool_sizes[:, None], size=(len(pool_sizes), batch_size))
    return ordered[positions].astype(np.int64, copy=False)


class Curriculum(ABC):
    """An order of presentation: which training examples each step's mini-batch holds."""

    key: ClassVar[str]
    description: ClassVar[str]
    """One-line human description."""

    def compatible(self, task: Task) -> bool:
        """Whether this curriculum can order ``task``'s examples (default: every task)."""
        return True

    @abstractmethod
    def batch_indices(
        self, data: TaskData, n_steps: int, batch_size: int, rng: np.random.Generator
    ) -> np.ndarray:
        """The examples of every training step.

        Args:
            data: the task's data (its training split is indexed).
            n_steps: number of parameter updates.
            batch_size: examples per update.
            rng: the random source (the only one used).

        Returns:
            (n_steps, batch_size) int64 indices into ``data.x_train``.

        Raises:
            ConfigError: if ``n_steps``/``batch_size`` are invalid or the task is incompatible.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


CURRICULA: Registry[Curriculum] = Registry("curriculum")
"""Registered :class:`Curriculum` instances, by key."""


@final
class Iid(Curriculum):
    """Epoch-wise random permutations, concatenated and cut into batches: each example once per epoch."""

    key = "iid"
    description = "random reshuffle every epoch; each training example seen once per epoch"

    def batch_indices(
        self, data: TaskData, n_steps: int, batch_size: int, rng: np.random.Generator
    ) -> np.ndarray:
        _check_schedule(n_steps, batch_size)
        n_total, n_train = n_steps * batch_size, data.n_train
        n_epochs = -(-n_total // n_train)
        perms = rng.permuted(np.broadcast_to(np.arange(n_train, dtype=np.int64), (n_epochs, n_train)), axis=1)
        return perms.reshape(-1)[:n_total].reshape(n_steps, batch_size)


@final
class ClassIncremental(Curriculum):
    """Classes unlock in random order: 2 at the start, all by 60% of training; batches from unlocked ones."""

    key = "class_incremental"
    description = "classes unlock in random order, 2 at first, all by 60% of training; uniform over unlocked"

    def compatible(self, task: Task) -> bool:
        return task.has_classes

    def batch_indices(
        self, data: TaskData, n_steps: int, batch_size: int, rng: np.random.Generator
    ) -> np.ndarray:
        _check_schedule(n_steps, batch_size)
        if data.labels_train is None:
            raise ConfigError(f"curriculum {self.key!r} needs a task with classes; {data.key!r} has none")
        labels = data.labels_train
        classes = np.unique(labels)
        order = rng.permutation(classes)  # order[j] = the j-th class to unlock
        unlock_rank = np.empty(int(classes.max()) + 1, dtype=np.int64)
        unlock_rank[order] = np.arange(len(order))
        ordered = np.argsort(unlock_rank[labels], kind="stable")  # examples grouped by unlock rank
        cum = np.concatenate([[0], np.cumsum(np.bincount(unlock_rank[labels], minlength=len(order)))])
        k_start = min(2, len(classes))
        n_unlocked = np.floor(_ramp(n_steps, k_start, len(classes)) + 1e-9).astype(np.int64)
        return _draw_from_prefix(ordered, cum[n_unlocked], batch_size, rng)


@final
class EasyToHard(Curriculum):
    """Pool of easiest examples grows from 20% to the whole set by 60% of training; batches from the pool."""

    key = "easy_to_hard"
    description = "easiest 20% of examples first, pool grows to all by 60% of training; uniform over pool"

    def batch_indices(
        self, data: TaskData, n_steps: int, batch_size: int, rng: np.random.Generator
    ) -> np.ndarray:
        _check_schedule(n_steps, batch_size)
        ordered = np.argsort(data.difficulty_train, kind="stable")
        n = data.n_train
        pool = np.clip(np.ceil(_ramp(n_steps, 0.2, 1.0) * n - 1e-9).astype(np.int64), 1, n)
        return _draw_from_prefix(ordered, pool, batch_size, rng)


for _curriculum_type in (Iid, ClassIncremental, EasyToHard):
    CURRICULA.add(_curriculum_type.key, _curriculum_type())
