"""The authors' samplers: replay of the saved MATLAB epochs, invariants at SOP size, errors."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
import scipy.io
import torch.utils.data

from reproduce import paths
from reproduce.errors import InputError
from reproduce.training.sampler import (
    ClassBalancedSampler,
    MetaClassSampler,
    NumpyPermutations,
    ReplayPermutations,
    analyse_metaclasses,
    train_hard_epoch,
    train_hard_vid_epoch,
)

TRAINING = paths.FIXTURES / "training_matlab"
SAMPLER_CASES = sorted(TRAINING.glob("th_*.mat")) + sorted(TRAINING.glob("thv_*.mat"))


def _scalar(mat: dict, name: str) -> int:
    return int(np.asarray(mat[name]).ravel()[0])


@pytest.mark.parametrize("path", SAMPLER_CASES, ids=lambda p: p.stem)
def test_replayed_draws_rebuild_every_saved_epoch_exactly(path) -> None:
    mat = scipy.io.loadmat(path)
    index = analyse_metaclasses(mat["labels"], mat["set"])
    np.testing.assert_array_equal(index.train_idx + 1, mat["train_idx"].ravel())
    np.testing.assert_array_equal(index.meta_ids, mat["meta_ids"].ravel())
    np.testing.assert_array_equal(index.meta_num, mat["meta_num"].ravel())
    for i, groups in enumerate(mat["meta_groups"].ravel()):
        saved = [np.asarray(g).ravel() - 1 for g in groups.ravel()]
        ours = index.groups(i)
        assert len(ours) == len(saved)
        for a, b in zip(ours, saved, strict=True):
            np.testing.assert_array_equal(a, b)
    sampler = str(mat["sampler"][0])
    M = _scalar(mat, "batchSize")
    assert mat["epochs"].shape[1] == _scalar(mat, "n_epochs")
    for k in range(mat["epochs"].shape[1]):
        epoch = mat["epochs"][0, k]
        source = ReplayPermutations(list(epoch["perms"][0, 0].ravel()))
        if sampler == "train_hard":
            plan = train_hard_epoch(index, M, _scalar(mat, "batchesPerMetaPair"), source)
            np.testing.assert_array_equal(plan.metaPairs + 1, epoch["metaPairs"][0, 0])
            assert plan.numBatches == int(epoch["numBatches"][0, 0].ravel()[0])
        else:
            plan = train_hard_vid_epoch(index, M, source)
            np.testing.assert_array_equal(plan.batches_per_meta,
                                          epoch["numBatches"][0, 0].ravel())
        assert source.remaining == 0, "every recorded draw is used"
        saved_lists = epoch["metaC_idx"][0, 0].ravel()
        assert len(plan.metaC_idx) == len(saved_lists)
        for ours, saved in zip(plan.metaC_idx, saved_lists, strict=True):
            np.testing.assert_array_equal(ours + 1, np.asarray(saved).ravel())
        np.testing.assert_array_equal(plan.batches.T + 1, epoch["batches"][0, 0])
        np.testing.assert_array_equal(plan.batches_img.T + 1, epoch["batches_img"][0, 0])


def test_the_interleaved_case_is_where_the_index_defect_shows() -> None:
    mat = scipy.io.loadmat(TRAINING / "th_inshop_interleaved_m16_bpmp2.mat")
    epoch = mat["epochs"][0, 0]
    perms = list(epoch["perms"][0, 0].ravel())
    shared = ReplayPermutations(perms)  # construction must not draw from the source
    fixed = MetaClassSampler(mat["labels"], mat["set"], 16, 2,
                             source_for_epoch=lambda e: shared)
    literal = MetaClassSampler(mat["labels"], mat["set"], 16, 2, literal_subset_indices=True,
                               source_for_epoch=lambda e: ReplayPermutations(perms))
    np.testing.assert_array_equal(np.array(list(fixed)) + 1, epoch["batches_img"][0, 0].T)
    np.testing.assert_array_equal(np.array(list(literal)) + 1, epoch["batches"][0, 0].T)
    assert not np.array_equal(epoch["batches"][0, 0], epoch["batches_img"][0, 0])


def _sop_like(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """59,551 images in 11,318 classes of 2-12 images, 12 meta-classes (SOP's sizes)."""
    rng = np.random.default_rng(seed)
    n_img, n_cls = 59_551, 11_318
    sizes = np.full(n_cls, 2) + rng.multinomial(n_img - 2 * n_cls, np.ones(n_cls) / n_cls)
    cls = np.repeat(np.arange(1, n_cls + 1), sizes)
    meta_of_cls = rng.integers(1, 13, n_cls)
    meta_of_cls[:12] = np.arange(1, 13)  # every meta-class present
    return np.stack([cls, meta_of_cls[cls - 1]], axis=1), np.ones(n_img)


def test_sop_size_epoch_invariants() -> None:
    labels, train = _sop_like()
    M, bpmp = 256, 5
    sampler = MetaClassSampler(labels, train, M, bpmp)
    assert len(sampler) == comb(12, 2) * bpmp == 330
    plan = sampler.plan(1)
    batches = plan.batches_img
    assert batches.shape == (330, M)
    meta = labels[:, 1]
    first, second = meta[batches[:, :M // 2]], meta[batches[:, M // 2:]]
    assert (first == first[:, :1]).all() and (second == second[:, :1]).all()
    assert (first[:, 0] < second[:, 0]).all()  # halves from two meta-classes, a < b
    pairs = np.stack([first[:, 0], second[:, 0]], 1)[::bpmp]
    assert len({tuple(p) for p in pairs}) == 66  # every pair once, bpmp consecutive batches
    np.testing.assert_array_equal(np.repeat(pairs, bpmp, axis=0),
                                  np.stack([first[:, 0], second[:, 0]], 1))
    # each meta-class gives (Nmeta-1)*bpmp*M/2 images, walking its list with wrap
    for i in range(12):
        L = plan.metaC_idx[i]
        rows = np.concatenate([batches[first[:, 0] == i + 1, :M // 2],
                               batches[second[:, 0] == i + 1, M // 2:]])
        assert rows.size == 11 * bpmp * M // 2
        # the halves, in batch order, are consecutive entries of the list (mod its length)
        order = np.sort(np.concatenate([np.flatnonzero(first[:, 0] == i + 1),
                                        np.flatnonzero(second[:, 0] == i + 1)]))
        seq = np.concatenate([batches[b, :M // 2] if first[b, 0] == i + 1 else
                              batches[b, M // 2:] for b in order])
        images = sampler.index.train_idx[L]
        np.testing.assert_array_equal(seq, images[np.arange(seq.size) % L.size])
        # classes are contiguous runs inside the list (images of a class never shuffled)
        runs = np.count_nonzero(np.diff(labels[L, 0]) != 0) + 1
        assert runs == np.unique(labels[L, 0]).size


def test_default_source_is_seeded_per_epoch_and_epochs_differ() -> None:
    labels, train = _sop_like(1)
    a = MetaClassSampler(labels, train, 256, 5)
    b = MetaClassSampler(labels, train, 256, 5)
    np.testing.assert_array_equal(a.batches_for(3), b.batches_for(3))
    assert not np.array_equal(a.batches_for(3), a.batches_for(4))
    seed_check = MetaClassSampler(labels, train, 256, 5, random_seed=7)
    assert not np.array_equal(seed_check.batches_for(3), a.batches_for(3))
    assert NumpyPermutations(45).randperm(5).tolist() == \
        np.random.default_rng(45).permutation(5).tolist()


def test_state_dict_resumes_mid_epoch_and_works_with_a_dataloader() -> None:
    labels, train = _sop_like(2)
    sampler = MetaClassSampler(labels, train, 16, 2)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(3)
    sampler.set_epoch(2)
    it = iter(sampler)
    head = [next(it) for _ in range(7)]
    state = sampler.state_dict()
    assert state == {"epoch": 2, "position": 7}
    resumed = MetaClassSampler(labels, train, 16, 2)
    resumed.load_state_dict(state)
    assert head + list(resumed) == full
    dataset = torch.utils.data.TensorDataset(torch.arange(labels.shape[0]))
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=MetaClassSampler(
        labels, train, 16, 2))
    got = [b[0].tolist() for b in loader]
    sampler.set_epoch(1)
    assert got == list(sampler)
    with pytest.raises(InputError, match="position"):
        resumed.load_state_dict({"epoch": 2, "position": 10_000})


def test_single_image_metaclass_is_repeated_not_a_crash() -> None:
    labels = np.array([[1, 1], [1, 1], [2, 1], [3, 2], [4, 3], [4, 3], [4, 3]])
    plan = train_hard_epoch(analyse_metaclasses(labels, np.ones(7)), 4, 1,
                            NumpyPermutations(0))
    rows = {tuple(labels[b, 1]) for b in plan.batches_img}
    assert rows == {(1, 1, 2, 2), (1, 1, 3, 3), (2, 2, 3, 3)}
    halves = plan.batches_img.reshape(-1, 2)
    single = halves[labels[halves[:, 0], 1] == 2]
    assert single.shape == (2, 2) and (single == 3).all()  # the one image, M/2 times


def test_vid_needs_meta_zero_and_counts_batches() -> None:
    labels = np.array([[c, m] for c, m in [(1, 0), (1, 0), (2, 0), (3, 5), (3, 5), (4, 5),
                                           (4, 5), (4, 5), (6, 7)]])
    plan = train_hard_vid_epoch(analyse_metaclasses(labels, np.ones(9)), 4,
                                NumpyPermutations(0))
    assert plan.batches_per_meta.tolist() == [0, 3, 1]  # ceil(2*5/4), ceil(2*1/4)
    assert (labels[plan.batches_img[:, :2], 1] == 0).all()
    with pytest.raises(InputError, match="meta-class id 0"):
        train_hard_vid_epoch(analyse_metaclasses(labels[3:], np.ones(6)), 4,
                             NumpyPermutations(0))


@pytest.mark.parametrize(("labels", "M", "match"), [
    ([[1, 1], [2, 2]], 3, "even"),
    ([[1, 1], [2, 1]], 4, "two meta-classes"),
    ([[1, 1], [2, 2]], 0, "positive even"),
])
def test_bad_configurations_are_clear_errors(labels, M, match) -> None:
    with pytest.raises(InputError, match=match):
        MetaClassSampler(np.array(labels), np.ones(len(labels)), M, 1)


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(InputError, match="label rows"):
        analyse_metaclasses(np.ones((4, 2)), np.ones(3))
    with pytest.raises(InputError, match="no training images"):
        analyse_metaclasses(np.ones((4, 2)), np.zeros(4))
    with pytest.raises(InputError, match="n x 2"):
        analyse_metaclasses(np.ones(4), np.ones(4))
    with pytest.raises(InputError, match="batchesPerMetaPair"):
        MetaClassSampler(np.array([[1, 1], [2, 2]]), np.ones(2), 2, 0)
    with pytest.raises(InputError, match="not a permutation"):
        ReplayPermutations([[1, 1, 2]]).randperm(3)
    with pytest.raises(InputError, match="recorded"):
        ReplayPermutations([]).randperm(3)


def test_empty_metaclass_is_an_error() -> None:
    from dataclasses import replace
    index = analyse_metaclasses(np.array([[1, 1], [2, 2]]), np.ones(2))
    broken = replace(index, group_starts=(np.array([0]), np.array([], dtype=np.int64)),
                     group_sizes=(np.array([1]), np.array([], dtype=np.int64)))
    with pytest.raises(InputError, match="no images"):
        train_hard_epoch(broken, 2, 1, NumpyPermutations(0))


def test_class_balanced_sampler_covers_every_training_image() -> None:
    labels = np.repeat(np.arange(10), 7)[:, None]
    train = np.ones(70)
    train[::9] = 0
    sampler = ClassBalancedSampler(labels, train, 16)
    batches = sampler.batches_for(1)
    assert batches.shape == (-(-int(train.sum()) // 16), 16)
    assert set(batches.ravel()) == set(np.flatnonzero(train))
    flat = batches.ravel()[:int(train.sum())]
    assert np.count_nonzero(np.diff(labels[flat, 0]) != 0) == 9  # classes contiguous
    assert not np.array_equal(batches, sampler.batches_for(2))
