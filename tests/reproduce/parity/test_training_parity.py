"""The training fixture families in ``fastap parity``: detection by fields, verdicts, errors."""

from __future__ import annotations

import shutil

import pytest
import scipy.io

from reproduce import paths
from reproduce.errors import InputError
from reproduce.parity.run import check_fixture, run_parity
from reproduce.parity.training import check_sampler_fixture

TRAINING = paths.FIXTURES / "training_matlab"


def test_training_fixtures_are_in_the_default_set_and_all_pass() -> None:
    assert TRAINING in paths.DEFAULT_FIXTURE_DIRS
    rows, ok = run_parity([TRAINING])
    assert ok
    cases = {r.case for r in rows}
    assert len(cases) == len(list(TRAINING.glob("*.mat")))


@pytest.mark.parametrize("name", ["th_sop6_m16_bpmp2", "adam_fresh_wd_double",
                                  "step_plain_m12_exact"])
def test_families_are_detected_by_fields_not_names(tmp_path, name) -> None:
    renamed = tmp_path / "anything.mat"
    shutil.copy(TRAINING / f"{name}.mat", renamed)
    rows = check_fixture(renamed)
    assert rows and all(r.passed for r in rows)
    assert {r.case for r in rows} == {name}  # the case is the file's case_name


def test_a_changed_recorded_draw_changes_the_batches(tmp_path) -> None:
    mat = scipy.io.loadmat(TRAINING / "th_sop6_m16_bpmp2.mat")
    perms = mat["epochs"][0, 1]["perms"][0, 0]
    first = perms[0, 0]
    first[0, [0, 1]] = first[0, [1, 0]]  # swap two classes of meta-class 1 in epoch 2
    bad = tmp_path / "bad.mat"
    scipy.io.savemat(bad, {k: v for k, v in mat.items() if not k.startswith("__")})
    rows = check_sampler_fixture(bad)
    failed = {r.quantity for r in rows if not r.passed}
    assert "epoch2.metaC_idx" in failed and "epoch2.batches" in failed
    assert all(r.error_over_tolerance > 1.0 for r in rows if not r.passed)
    assert all(r.error_over_tolerance == 0.0 for r in rows if r.passed)  # identical ones
    assert not any(q.startswith("epoch1") for q in failed)


def test_a_file_with_part_of_a_family_is_a_clear_error(tmp_path) -> None:
    mat = scipy.io.loadmat(TRAINING / "th_two_meta_exact_wrap_m16_bpmp3.mat")
    partial = tmp_path / "partial.mat"
    scipy.io.savemat(partial, {k: v for k, v in mat.items()
                               if k in ("labels", "set", "batchSize")})
    with pytest.raises(InputError, match="partial.mat"):
        check_fixture(partial)
    broken = tmp_path / "broken.mat"
    data = {k: v for k, v in mat.items() if not k.startswith("__")}
    data["sampler"] = "train_easy"
    scipy.io.savemat(broken, data)
    with pytest.raises(InputError, match="train_hard"):
        check_fixture(broken)
