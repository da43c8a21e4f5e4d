"""PKU VehicleID as ``+imdb/vid.m`` reads it, with both evaluation protocols.

Layout (``VehicleID_V1.0``): ``attribute/img2vid.txt`` (``<image id> <vehicle id>``; its order
is the image order), ``attribute/model_attr.txt`` and ``attribute/color_attr.txt``
(``<vehicle id> <id>``), ``train_test_split/test_list_{800,1600,2400}.txt`` (and
``train_list.txt``, only count-checked), images ``image/%07d.jpg``. ``root`` may also be the
folder holding ``VehicleID_V1.0/``. The authors resized the images once to 256x256.

Labels as the MATLAB code builds them: class = vehicle id; ``meta`` = MATLAB's column 2,
which ``vid.m`` fills with model+1 and then overwrites with colour+1 wherever a colour is
known (a bug: its meta-classes are mostly colours); ``extra["model"]`` and ``extra["color"]``
hold the intended model+1 and colour+1 (0 = unknown).

A test split holds every image (img2vid order) whose vehicle is in the list file. Two
protocols per split size, named so they cannot be confused:

- ``vid-<size>-authors``: evaluate_model.m: the split against itself, self excluded by
  index, K = 1, 5. Not the protocol most VehicleID papers use.
- ``vid-<size>-reid``: the usual re-identification protocol: per draw, one random image of
  each vehicle forms the gallery and all other images query it (nothing excluded),
  K = 1, 5, Recall@K averaged over ``REID_DRAWS`` draws seeded with ``[seed, draw]``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from reproduce.errors import InputError
from reproduce.evaluation.datasets.common import (
    CountCheck,
    Dataset,
    PathList,
    Protocol,
    Split,
    check_counts,
    first_existing,
    read_table,
    require_file,
    validate_images,
)

log = logging.getLogger(__name__)

NAME = "vid"
KS = (1, 5)
REID_DRAWS = 10
REID_SEED = 0
SIZES = {"small": 800, "medium": 1600, "large": 2400}
PUBLISHED_IMAGES = {"small": 6493, "medium": 13377, "large": 19777, "train": 113346}
PUBLISHED_VEHICLES = {"small": 800, "medium": 1600, "large": 2400, "train": 13164}


def _root(root: Path) -> Path:
    """The ``VehicleID_V1.0`` folder (holding ``attribute/img2vid.txt``)."""
    rel = Path("attribute") / "img2vid.txt"
    return first_existing([root / rel, root / "VehicleID_V1.0" / rel],
                          "VehicleID img2vid.txt").parent.parent


def _attribute(path: Path, vid: np.ndarray, what: str) -> np.ndarray:
    """Per image: the attribute id + 1 of its vehicle (0 when the vehicle is not listed)."""
    rows = read_table(require_file(path, what), 2, 0, (int, int), f"<vehicle id> <{what} id>")
    table = np.array(rows, dtype=np.int64).reshape(-1, 2)
    out = np.zeros(len(vid), dtype=np.int64)
    if len(table):
        # later lines win, as the MATLAB loop overwrites
        lookup = dict(zip(table[:, 0].tolist(), (table[:, 1] + 1).tolist(), strict=True))
        out = np.array([lookup.get(v, 0) for v in vid.tolist()], dtype=np.int64)
    return out


def reid_splits(vid: np.ndarray, members: np.ndarray, draws: int = REID_DRAWS,
                seed: int = REID_SEED) -> tuple[Split, ...]:
    """Per draw, one random gallery image per vehicle among ``members``, the rest as queries.

    Draw ``d`` uses ``numpy.random.default_rng([seed, d])``, so the draws are reproducible
    and independent of how many are requested.
    """
    splits = []
    member_vid = vid[members]
    order = np.argsort(member_vid, kind="stable")
    _, first, counts = np.unique(member_vid[order], return_index=True, return_counts=True)
    for d in range(draws):
        rng = np.random.default_rng([seed, d])
        pick = first + (rng.random(len(counts)) * counts).astype(np.int64)
        gallery = np.sort(members[order[pick]])
        query = np.setdiff1d(members, gallery, assume_unique=True)
        splits.append(Split(query, gallery))
    return tuple(splits)


def _available_sizes(split_dir: Path) -> tuple[str, ...]:
    """The split sizes whose list file exists (a warning names the missing ones)."""
    found = tuple(s for s, n in SIZES.items() if (split_dir / f"test_list_{n}.txt").is_file())
    missing = [str(split_dir / f"test_list_{SIZES[s]}.txt") for s in SIZES if s not in found]
    if not found:
        raise InputError(f"{split_dir}: no test split list (test_list_800/1600/2400.txt)")
    if missing:
        log.warning("VehicleID: evaluating only the %s split(s); missing %s", ", ".join(found),
                    ", ".join(missing))
    return found


def load_vehicleid(root: str | Path, sizes: tuple[str, ...] | None = None,
                   strict: bool = False, verify: str = "exists",
                   reid_draws: int = REID_DRAWS, reid_seed: int = REID_SEED) -> Dataset:
    """Read VehicleID with the test splits ``sizes`` (default: every split whose list file
    exists, with a warning for the missing ones); ``verify`` checks their images."""
    base = _root(Path(root))
    if sizes is None:
        sizes = _available_sizes(base / "train_test_split")
    unknown = [s for s in sizes if s not in SIZES]
    if unknown or not sizes:
        raise InputError(f"VehicleID sizes must be among {list(SIZES)}, got {list(sizes)}")
    img2vid = base / "attribute" / "img2vid.txt"
    rows = np.array(read_table(img2vid, 2, 0, (int, int), "<image id> <vehicle id>"),
                    dtype=np.int64).reshape(-1, 2)
    if not len(rows):
        raise InputError(f"{img2vid}: no images listed")
    imgs, vid = rows[:, 0], rows[:, 1]
    model = _attribute(base / "attribute" / "model_attr.txt", vid, "model")
    color = _attribute(base / "attribute" / "color_attr.txt", vid, "colour")
    meta = np.where(color > 0, color, model)  # vid.m writes colours into the model column
    split_dir = base / "train_test_split"
    checks: list[CountCheck] = []
    subset = np.full(len(vid), "", dtype=object)
    train_file = split_dir / "train_list.txt"
    if train_file.is_file():
        train_v = np.unique(np.array(read_table(train_file, 2, 0, (int, int),
                                                "<image id> <vehicle id>"),
                                     dtype=np.int64).reshape(-1, 2)[:, 1])
        in_train = np.isin(vid, train_v)
        subset[in_train] = "train"
        checks += [CountCheck("train vehicles", PUBLISHED_VEHICLES["train"], len(train_v)),
                   CountCheck("train images", PUBLISHED_IMAGES["train"], int(in_train.sum()))]
    protocols: dict[str, Protocol] = {}
    needed: list[int] = []
    for size in sizes:
        list_file = require_file(split_dir / f"test_list_{SIZES[size]}.txt",
                                 f"VehicleID {size} test split")
        list_rows = np.array(read_table(list_file, 2, 0, (int, int), "<image id> <vehicle id>"),
                             dtype=np.int64).reshape(-1, 2)
        vehicles = np.unique(list_rows[:, 1])
        members = np.nonzero(np.isin(vid, vehicles))[0]
        if not len(members):
            raise InputError(f"{list_file}: none of its vehicles is in {img2vid}")
        subset[members] = np.where(subset[members] == "", f"test_{size}", subset[members])
        checks += [CountCheck(f"{size} test vehicles", PUBLISHED_VEHICLES[size], len(vehicles)),
                   CountCheck(f"{size} test images", PUBLISHED_IMAGES[size], len(members))]
        needed.extend(members.tolist())
        protocols[f"vid-{size}-authors"] = Protocol(
            name=f"vid-{size}-authors", family="authors",
            description=f"authors (evaluate_model.m): {size} test split ({SIZES[size]} "
                        "vehicles) vs itself, self excluded by index",
            splits=(Split(members, members),), remove_diag=True, Ks=KS)
        protocols[f"vid-{size}-reid"] = Protocol(
            name=f"vid-{size}-reid", family="reid",
            description=f"re-ID: {size} test split, one random gallery image per vehicle, "
                        f"all others as queries, mean over {reid_draws} seeded draws",
            splits=reid_splits(vid, members, reid_draws, reid_seed), remove_diag=False, Ks=KS,
            seed=reid_seed)
    paths = PathList(base / "image", [f"{i:07d}.jpg" for i in imgs.tolist()])
    validate_images([paths[i] for i in sorted(set(needed))], NAME, verify)
    return Dataset(name=NAME, root=base, paths=paths, labels=vid, meta=meta,
                   subset=subset.astype(str), protocols=protocols, pre_resize=(256, 256),
                   extra={"image_id": imgs, "model": model, "color": color},
                   count_checks=check_counts(checks, NAME, strict))
