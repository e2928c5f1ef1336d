"""Tests for simulator.tasks: task data conformance, the task-specific properties, and the curricula."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from simulator.errors import ConfigError
from simulator.tasks import CURRICULA, TASKS, Curriculum, Task, TaskData

TASK_KEYS = TASKS.keys()
CURRICULUM_TASK_PAIRS = [
    (c_key, t_key)
    for c_key, curriculum in CURRICULA.items()
    for t_key, task in TASKS.items()
    if curriculum.compatible(task)
]


def test_registries_hold_exactly_the_specified_keys() -> None:
    assert set(TASKS) == {"digits", "gaussian_mixture", "teacher_student", "autoencoding"}
    assert set(CURRICULA) == {"iid", "class_incremental", "easy_to_hard"}
    assert all(isinstance(t, Task) for _, t in TASKS.items())
    assert all(isinstance(c, Curriculum) for _, c in CURRICULA.items())
    with pytest.raises(ConfigError, match="allowed: autoencoding, digits"):
        TASKS.get("mnist")
    with pytest.raises(ConfigError, match="allowed: class_incremental, easy_to_hard, iid"):
        CURRICULA.get("shuffled")


# --------------------------------------------------------------------------------------------- tasks


@pytest.mark.parametrize("key", TASK_KEYS)
def test_task_conformance(key: str) -> None:
    task = TASKS.get(key)
    data = task.load()
    assert data.key == task.key == key
    assert data.kind == task.kind
    assert data.n_outputs == task.n_outputs
    assert task.input_shape == (1, 8, 8)
    assert isinstance(task.description, str) and task.description and "\n" not in task.description

    n_train, n_test = len(data.x_train), len(data.x_test)
    assert n_train > 0 and n_test >= 16
    assert data.x_train.shape == (n_train, 64) and data.x_train.dtype == np.float32
    assert data.x_test.shape == (n_test, 64) and data.x_test.dtype == np.float32
    assert data.difficulty_train.shape == (n_train,) and data.difficulty_train.dtype == np.float64
    for x in (data.x_train, data.x_test):
        assert 0.2 < float(np.abs(x).mean()) and float(np.abs(x).max()) < 10.0  # features of order 1

    if data.kind == "classification":
        assert data.metric == "accuracy"
        assert data.n_outputs == data.n_classes > 0
        assert data.chance == pytest.approx(1.0 / data.n_classes)
        for y, n in ((data.y_train, n_train), (data.y_test, n_test)):
            assert y.shape == (n,) and y.dtype == np.int64
            assert set(np.unique(y)) == set(range(data.n_classes))
    else:
        assert data.metric == "r2" and data.chance == 0.0
        for y, n in ((data.y_train, n_train), (data.y_test, n_test)):
            assert y.shape == (n, data.n_outputs) and y.dtype == np.float32

    assert task.has_classes == (data.labels_train is not None) == (data.labels_test is not None)
    assert task.has_classes == (data.n_classes > 0)
    if data.labels_train is not None and data.labels_test is not None:
        for labels, n in ((data.labels_train, n_train), (data.labels_test, n_test)):
            assert labels.shape == (n,) and labels.dtype == np.int64
            assert set(np.unique(labels)) == set(range(data.n_classes))

    arrays = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
    arrays = {name: a for name, a in arrays.items() if isinstance(a, np.ndarray)}
    for name, a in arrays.items():
        assert np.isfinite(a).all(), name
        assert not a.flags.writeable, name
        with pytest.raises(ValueError):
            a.flat[0] = 0

    again = task.load()
    assert again is data
    fresh = type(task)()._build()  # rebuilt from scratch: the fixed seed gives the same arrays
    for name, a in arrays.items():
        np.testing.assert_array_equal(getattr(fresh, name), a, err_msg=name)


@pytest.mark.parametrize("key", TASK_KEYS)
def test_probe_indices(key: str) -> None:
    data = TASKS.get(key).load()
    probes = data.probe_indices(16)
    assert probes.shape == (16,) and probes.dtype == np.int64
    np.testing.assert_array_equal(probes, data.probe_indices(16))
    assert len(np.unique(probes)) == 16
    assert probes.min() >= 0 and probes.max() < len(data.x_test)
    if data.labels_test is not None:
        counts = np.bincount(data.labels_test[probes], minlength=data.n_classes)
        assert data.n_classes == 10
        assert counts.min() >= 1 and counts.max() <= 2
        # round robin: the first n_classes probes hold every class once
        assert sorted(data.labels_test[probes[:10]]) == list(range(10))
    all_probes = data.probe_indices(len(data.x_test))
    assert sorted(all_probes) == list(range(len(data.x_test)))
    for bad in (-1, len(data.x_test) + 1):
        with pytest.raises(ConfigError):
            data.probe_indices(bad)


def test_task_data_rejects_bad_arrays() -> None:
    good = TASKS.get("teacher_student").load()
    fields = {f.name: getattr(good, f.name) for f in dataclasses.fields(good)}
    with pytest.raises(ValueError, match="x_train"):
        TaskData(**{**fields, "x_train": good.x_train.astype(np.float64)})
    with pytest.raises(ValueError, match="kind"):
        TaskData(**{**fields, "kind": "ranking"})
    with pytest.raises(ValueError, match="r2"):
        TaskData(**{**fields, "metric": "accuracy"})


def test_digits_split() -> None:
    data = TASKS.get("digits").load()
    assert (len(data.x_train), len(data.x_test)) == (1437, 360)
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0
    # stratified: every class's share of the test set matches its share of the training set
    share_train = np.bincount(data.y_train) / len(data.y_train)
    share_test = np.bincount(data.y_test) / len(data.y_test)
    np.testing.assert_allclose(share_test, share_train, atol=0.01)
    # difficulty is normalised per class: mean 1 within each class
    per_class = np.bincount(data.y_train, weights=data.difficulty_train) / np.bincount(data.y_train)
    np.testing.assert_allclose(per_class, 1.0, rtol=1e-9)


def test_autoencoding_reconstructs_digits() -> None:
    data, digits = TASKS.get("autoencoding").load(), TASKS.get("digits").load()
    assert data.n_outputs == 64 and data.n_classes == 10
    np.testing.assert_array_equal(data.x_train, digits.x_train)
    np.testing.assert_array_equal(data.y_train, data.x_train)
    np.testing.assert_array_equal(data.y_test, data.x_test)
    assert data.labels_train is not None and data.labels_test is not None
    np.testing.assert_array_equal(data.labels_train, digits.y_train)
    np.testing.assert_array_equal(data.labels_test, digits.y_test)


@pytest.fixture(scope="module")
def gaussian_mixture_linear() -> tuple[TaskData, LogisticRegression]:
    data = TASKS.get("gaussian_mixture").load()
    model = LogisticRegression(max_iter=2000).fit(data.x_train, data.y_train)
    return data, model


def test_gaussian_mixture_is_neither_trivial_nor_impossible(
    gaussian_mixture_linear: tuple[TaskData, LogisticRegression],
) -> None:
    data, model = gaussian_mixture_linear
    assert (len(data.x_train), len(data.x_test)) == (2000, 500)
    np.testing.assert_array_equal(np.bincount(data.y_train), np.full(10, 200))
    accuracy = model.score(data.x_test, data.y_test)
    assert 0.55 <= accuracy <= 0.9
    assert 0.8 < float(data.x_train.std()) < 1.2


def test_gaussian_mixture_difficulty_tracks_linear_errors(
    gaussian_mixture_linear: tuple[TaskData, LogisticRegression],
) -> None:
    data, model = gaussian_mixture_linear
    correct = model.predict(data.x_train) == data.y_train
    hard = data.difficulty_train > np.median(data.difficulty_train)
    assert correct[~hard].mean() > correct[hard].mean() + 0.02


def test_teacher_student_targets_standardised() -> None:
    data = TASKS.get("teacher_student").load()
    assert (len(data.x_train), len(data.x_test)) == (2000, 500)
    assert data.n_outputs == 10 and data.n_classes == 0
    np.testing.assert_allclose(data.y_train.mean(axis=0), 0.0, atol=0.02)
    np.testing.assert_allclose(data.y_train.std(axis=0), 1.0, atol=0.03)
    np.testing.assert_allclose(data.x_train.std(axis=0), 1.0, atol=0.1)
    np.testing.assert_allclose(data.difficulty_train, np.linalg.norm(data.y_train, axis=1), rtol=1e-5)


# ------------------------------------------------------------------------------------------- curricula


@pytest.mark.parametrize(("curriculum_key", "task_key"), CURRICULUM_TASK_PAIRS)
def test_curriculum_conformance(curriculum_key: str, task_key: str) -> None:
    curriculum, data = CURRICULA.get(curriculum_key), TASKS.get(task_key).load()
    assert isinstance(curriculum.description, str) and curriculum.description
    n_steps, batch_size = 50, 32
    batches = curriculum.batch_indices(data, n_steps, batch_size, np.random.default_rng(7))
    assert batches.shape == (n_steps, batch_size) and batches.dtype == np.int64
    assert batches.min() >= 0 and batches.max() < len(data.x_train)
    same = curriculum.batch_indices(data, n_steps, batch_size, np.random.default_rng(7))
    np.testing.assert_array_equal(batches, same)
    other = curriculum.batch_indices(data, n_steps, batch_size, np.random.default_rng(8))
    assert not np.array_equal(batches, other)
    assert curriculum.batch_indices(data, 0, batch_size, np.random.default_rng(7)).shape == (0, batch_size)
    for bad_steps, bad_batch in ((-1, 32), (10, 0)):
        with pytest.raises(ConfigError):
            curriculum.batch_indices(data, bad_steps, bad_batch, np.random.default_rng(7))


@pytest.mark.parametrize(("task_key", "batch_size"), [("gaussian_mixture", 16), ("digits", 64)])
def test_iid_sees_each_example_once_per_epoch(task_key: str, batch_size: int) -> None:
    data = TASKS.get(task_key).load()
    n_train = len(data.x_train)
    steps_per_epoch = n_train // batch_size
    n_steps = -(-3 * n_train // batch_size)  # enough for three whole epochs
    batches = CURRICULA.get("iid").batch_indices(data, n_steps, batch_size, np.random.default_rng(0))
    first_epoch = batches[:steps_per_epoch].ravel()
    assert len(np.unique(first_epoch)) == len(first_epoch)
    flat = batches.ravel()
    for epoch in range(3):  # the concatenated stream is a sequence of whole permutations
        epoch_indices = flat[epoch * n_train : (epoch + 1) * n_train]
        np.testing.assert_array_equal(np.sort(epoch_indices), np.arange(n_train))
    assert not np.array_equal(flat[:n_train], flat[n_train : 2 * n_train])  # reshuffled every epoch


@pytest.mark.parametrize("task_key", ["digits", "gaussian_mixture", "autoencoding"])
def test_class_incremental_unlocks_classes(task_key: str) -> None:
    data = TASKS.get(task_key).load()
    assert data.labels_train is not None
    n_steps = 200
    batches = CURRICULA.get("class_incremental").batch_indices(data, n_steps, 64, np.random.default_rng(3))
    classes = data.labels_train[batches]  # (n_steps, 64)
    assert len(np.unique(classes[0])) <= 2
    assert len(np.unique(classes[:5])) <= 2  # still two classes in the first steps
    seen_before: set[int] = set()
    for t in range(n_steps):  # the set of classes seen so far only grows, within the linear schedule
        seen_before |= set(classes[t].tolist())
        assert len(seen_before) <= 2 + 8 * t / (0.6 * n_steps) + 1e-9
    late = classes[int(0.6 * n_steps) :]
    assert min(len(np.unique(row)) for row in late) >= 6
    assert set(np.unique(late)) == set(range(10))
    # the unlock order is random: another seed starts with other classes (or another order of them)
    curriculum = CURRICULA.get("class_incremental")
    firsts = set()
    for seed in range(5):
        first_batch = curriculum.batch_indices(data, n_steps, 64, np.random.default_rng(seed))[0]
        firsts.add(tuple(np.unique(data.labels_train[first_batch]).tolist()))
    assert len(firsts) > 1


def test_class_incremental_needs_classes() -> None:
    curriculum = CURRICULA.get("class_incremental")
    assert not curriculum.compatible(TASKS.get("teacher_student"))
    assert curriculum.compatible(TASKS.get("autoencoding"))
    with pytest.raises(ConfigError, match="class"):
        curriculum.batch_indices(TASKS.get("teacher_student").load(), 10, 8, np.random.default_rng(0))
    assert CURRICULA.get("iid").compatible(TASKS.get("teacher_student"))
    assert CURRICULA.get("easy_to_hard").compatible(TASKS.get("teacher_student"))


@pytest.mark.parametrize("task_key", TASK_KEYS)
def test_easy_to_hard_goes_from_easy_to_hard(task_key: str) -> None:
    data = TASKS.get(task_key).load()
    n_steps, n_train = 200, len(data.x_train)
    batches = CURRICULA.get("easy_to_hard").batch_indices(data, n_steps, 64, np.random.default_rng(5))
    difficulty = data.difficulty_train[batches]
    tenth = n_steps // 10
    early, late = difficulty[:tenth].mean(), difficulty[-tenth:].mean()
    spread = data.difficulty_train.std()
    assert early < late - 0.5 * spread
    # step 0 draws only from the easiest 20%; after 60% of training the whole set is in play
    threshold = np.sort(data.difficulty_train)[int(np.ceil(0.2 * n_train)) - 1]
    assert difficulty[0].max() <= threshold
    assert difficulty[int(0.6 * n_steps) :].max() > np.quantile(data.difficulty_train, 0.95)
