"""``fastap evaluate``: a converted model on a dataset, scored as evaluate_model.m scores it.

Model file -> dataset reader -> preprocessing (recorded) -> cached embeddings -> Recall@K per
protocol -> ``<out>/evaluate/``: ``recall.csv`` (one row per protocol and K), ``recall.json``
(everything: model card summary, dataset counts and checks, preprocessing, protocols, the
printed MATLAB lines) and ``per_query_<protocol>.csv`` (each query's rank of its first
positive, for single-draw protocols), beside ``run_info.json``.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from converters.fastap.card import ModelCard
from reproduce.errors import InputError
from reproduce.evaluation.datasets import load_dataset
from reproduce.evaluation.datasets.common import Dataset, Protocol
from reproduce.evaluation.datasets.vehicleid import SIZES, load_vehicleid
from reproduce.evaluation.embeddings import extract_embeddings
from reproduce.evaluation.preprocess import MATLAB_JPEG_QUALITY, NAMES, make_preprocessing
from reproduce.evaluation.recall import NO_POSITIVE, format_recall_lines, recall_at_k
from reproduce.outputs import DEFAULT_OUT, command_dir, write_csv, write_json

log = logging.getLogger(__name__)

FAMILIES = ("authors", "reid", "all")
_VID_PROTOCOL = re.compile(r"^vid-(small|medium|large)-(authors|reid)$")
CARD_SCALINGS: dict[str, tuple[str, float]] = {
    "matlab": ("matlab", 1.0),
    "torchvision": ("torchvision", 1.0),
    "matlab_mean_x255": ("matlab", 255.0),
}
"""``input_scaling.best`` of a model card (``fastap convert --check-input``) -> preprocessing
name and the factor on ``averageImage`` (``matlab_mean_x255``: a 0-1 mean on 0-255 pixels)."""


def card_preprocessing(card: ModelCard, model_path: str | os.PathLike[str]
                       ) -> tuple[str, float, str]:
    """``(name, average factor, why)``: the preprocessing the model card records. The
    ``--check-input`` result (``input_scaling.best``) wins over ``preprocessing.default``;
    without either, ``matlab``."""
    best = (card.input_scaling or {}).get("best")
    if best is not None:
        if best not in CARD_SCALINGS:
            raise InputError(f"{model_path}: the model card's input_scaling.best {best!r} is "
                             f"not one of {sorted(CARD_SCALINGS)}; choose --preprocessing")
        name, factor = CARD_SCALINGS[best]
        return name, factor, f"model card input_scaling.best = {best} (convert --check-input)"
    default = (card.preprocessing or {}).get("default")
    if default in NAMES:
        return default, 1.0, f"model card preprocessing.default = {default}"
    return "matlab", 1.0, "default (the model card records none)"


def warn_other_dataset(card: ModelCard, dataset: str,
                       model_path: str | os.PathLike[str]) -> None:
    """One warning line when the card's loss options name another training dataset."""
    trained = card.dataset
    if trained and trained != dataset:
        log.warning("%s: the model was trained on %s (the card's opts.dataset), evaluating on "
                    "%s", model_path, trained, dataset)


def _load(dataset: str, root: str | os.PathLike[str] | None, protocols: list[str],
          strict: bool, verify: str, list_file: str | os.PathLike[str] | None = None) -> Dataset:
    """Read the dataset; for VehicleID only the split sizes the named protocols need (every
    available size when a family such as ``authors`` is asked for); ``list_file`` only for
    the ``list`` dataset, whose ``root`` defaults to the list file's folder."""
    if dataset == "list":
        return load_dataset("list", root, strict=strict, verify=verify, list_file=list_file)
    if list_file is not None:
        raise InputError(f"--list {list_file} is for --dataset list, not {dataset}")
    if root is None:
        raise InputError(f"--root is required for --dataset {dataset}")
    if dataset == "vid":
        matches = [_VID_PROTOCOL.match(p) for p in protocols]
        sizes = [m.group(1) for m in matches if m]
        chosen = tuple(s for s in SIZES if s in sizes) if sizes and all(matches) else None
        return load_vehicleid(root, sizes=chosen, strict=strict, verify=verify)
    return load_dataset(dataset, root, strict=strict, verify=verify)


def select_protocols(ds: Dataset, protocol: str) -> list[Protocol]:
    """Protocols by family (``authors``, ``reid``, ``all``) or by comma-separated names."""
    wanted = [p.strip() for p in protocol.split(",") if p.strip()]
    chosen: list[Protocol] = []
    for w in wanted:
        if w in FAMILIES:
            names = ds.protocol_names(None if w == "all" else w)
            if not names:
                raise InputError(f"dataset {ds.name} has no {w!r} protocol; it has "
                                 f"{sorted(ds.protocols)}")
            chosen += [ds.protocols[n] for n in names]
        elif w in ds.protocols:
            chosen.append(ds.protocols[w])
        else:
            raise InputError(f"unknown protocol {w!r} for dataset {ds.name}; choose a family "
                             f"{list(FAMILIES)} or one of {sorted(ds.protocols)}")
    unique = {p.name: p for p in chosen}
    return list(unique.values())


def _score(protocol: Protocol, feats: np.ndarray, position: np.ndarray, labels: np.ndarray,
           progress: bool) -> dict[str, Any]:
    """Recall@K of one protocol (mean over its draws) and per-query ranks (single draw).

    Ks larger than the smallest database are dropped with a warning (MATLAB would stop with
    an index error); they are listed under ``Ks_dropped``.
    """
    smallest = min(len(s.database) for s in protocol.splits)
    Ks = [k for k in protocol.Ks if k <= smallest]
    dropped = [k for k in protocol.Ks if k > smallest]
    if dropped:
        log.warning("%s: K = %s dropped, the database has only %d images", protocol.name,
                    dropped, smallest)
    if not Ks:
        raise InputError(f"{protocol.name}: the database has {smallest} images, fewer than "
                         f"every K in {list(protocol.Ks)}")
    recalls = []
    ranks = None
    for split in protocol.splits:
        res = recall_at_k(feats[position[split.query]], labels[split.query],
                          feats[position[split.database]], labels[split.database],
                          Ks, remove_diag=protocol.remove_diag, progress=progress)
        recalls.append(res.recall)
        if len(protocol.splits) == 1:
            ranks = res.rank
    mean = np.mean(np.stack(recalls), axis=0)
    per_draw = [r.tolist() for r in recalls]
    return {"Ks": Ks, "Ks_dropped": dropped, "recall": mean.tolist(), "per_draw": per_draw,
            "printed": format_recall_lines(Ks, mean), "ranks": ranks}


def evaluate(model_path: str | os.PathLike[str], dataset: str,
             root: str | os.PathLike[str] | None,
             protocol: str = "authors", out: str | os.PathLike[str] | None = DEFAULT_OUT,
             preprocessing: str | None = None, batch_size: int = 32, workers: int = 0,
             cache_dir: str | os.PathLike[str] | None = None, strict: bool = False,
             verify: str = "exists", jpeg_quality: int | None = MATLAB_JPEG_QUALITY,
             resize: str = "vl_imreadjpeg", progress: bool = True,
             interpolation: str = "bicubic", greyscale_mean: str = "first",
             list_file: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Evaluate a converted model; write results under ``<out>/evaluate/`` and return them.

    ``preprocessing``: ``matlab`` or ``torchvision``; ``None`` (default) uses the one the
    model card records (:func:`card_preprocessing`). ``protocol``: ``authors``
    (evaluate_model.m, default), ``reid`` (VehicleID only), ``all``,
    or protocol names separated by commas (``vid-small-authors``). ``cache_dir`` defaults to
    ``<out>/cache/embeddings``; ``jpeg_quality=None`` skips the JPEG re-encode after the
    256x256 pre-resize; ``interpolation`` (``bicubic``/``bilinear``) and ``greyscale_mean``
    (``first``/``per-channel``) are the ``matlab`` preprocessing's options. ``list_file``
    is the image list of ``dataset="list"`` (``root`` then defaults to its folder).
    Returns ``{"protocols": {name: {...}}, "folder": Path, ...}``.
    """
    from converters.fastap.model_file import load_model

    arguments = {"model_path": os.fspath(model_path), "dataset": dataset,
                 "root": os.fspath(root) if root is not None else None,
                 "list_file": os.fspath(list_file) if list_file is not None else None,
                 "protocol": protocol, "out": os.fspath(out) if out is not None else None,
                 "preprocessing": preprocessing, "batch_size": batch_size, "workers": workers,
                 "cache_dir": os.fspath(cache_dir) if cache_dir is not None else None,
                 "strict": strict, "verify": verify, "jpeg_quality": jpeg_quality,
                 "resize": resize, "interpolation": interpolation,
                 "greyscale_mean": greyscale_mean}
    out_root = Path(out if out is not None else DEFAULT_OUT)
    model, card = load_model(model_path)
    warn_other_dataset(card, dataset, model_path)
    factor = 1.0
    if preprocessing is None:
        preprocessing, factor, chosen_by = card_preprocessing(card, model_path)
    else:
        chosen_by = "--preprocessing"
    log.info("preprocessing %s (%s)", preprocessing, chosen_by)
    requested = [p.strip() for p in protocol.split(",") if p.strip()]
    ds = _load(dataset, root, requested, strict, verify, list_file)
    protocols = select_protocols(ds, protocol)
    average = card.input.average_image
    if preprocessing == "matlab" and average is None:
        raise InputError(f"{model_path}: the model card has no input.average_image, which the "
                         "'matlab' preprocessing subtracts")
    if average is not None and factor != 1.0:
        average = np.asarray(average, dtype=np.float32) * np.float32(factor)
    pre = make_preprocessing(preprocessing, average_image=average, pre_resize=ds.pre_resize,
                             jpeg_quality=jpeg_quality, resize=resize,
                             interpolation=interpolation, greyscale_mean=greyscale_mean)
    needed = np.unique(np.concatenate([p.image_indices() for p in protocols]))
    position = np.full(len(ds), -1, dtype=np.int64)
    position[needed] = np.arange(len(needed))
    cache = Path(cache_dir) if cache_dir is not None else out_root / "cache" / "embeddings"
    feats = extract_embeddings(model, card, [ds.paths[i] for i in needed], pre,
                               batch_size=batch_size, workers=workers, cache_dir=cache,
                               progress=progress)
    folder = command_dir(out_root, "evaluate", arguments)
    results: dict[str, Any] = {}
    rows = []
    for prot in protocols:
        scored = _score(prot, feats, position, ds.labels, progress)
        ranks = scored.pop("ranks")
        results[prot.name] = {**prot.record(), **scored}
        for k, r in zip(scored["Ks"], scored["recall"], strict=True):
            rows.append({"dataset": ds.name, "protocol": prot.name, "family": prot.family,
                         "K": k, "recall": r, "draws": len(prot.splits),
                         "preprocessing": pre.name,
                         "interpolation": pre.record().get("interpolation"),
                         "model": os.fspath(model_path)})
        if ranks is not None:
            q = prot.splits[0].query
            write_csv(folder / f"per_query_{prot.name}.csv", pd.DataFrame({
                "index": q, "path": [os.fspath(ds.paths[i]) for i in q],
                "label": ds.labels[q],
                "rank_first_positive": np.where(ranks == NO_POSITIVE, -1, ranks)}))
        for line in scored["printed"].splitlines():
            log.info("[%s] %s", prot.name, line)
    write_csv(folder / "recall.csv", pd.DataFrame(rows))
    summary = {"model": {"path": os.fspath(model_path),
                         "source_sha256": card.source_sha256,
                         "family": card.family,
                         "embedding_dim": int(feats.shape[1])},
               "dataset": ds.report(),
               "preprocessing": {**pre.record(), "chosen_by": chosen_by,
                                 "average_image_factor": factor},
               "protocols": results}
    write_json(folder / "recall.json", summary)
    summary["folder"] = folder
    return summary
