"""``fastap evaluate``: a converted model on a dataset, scored as evaluate_model.m scores it.

Model file -> dataset reader -> preprocessing (recorded) -> cached embeddings (on the chosen
device) -> per protocol Recall@K (as ``evaluate_model.m``), MAP@R and R-precision from one
pass over the distances, and NMI -> ``<out>/evaluate/``: ``metrics.csv`` (one row per
protocol and metric: ``R@K`` rows with their ``K``, then ``MAP@R``, ``R-precision``,
``NMI``; values are fractions), ``metrics.json`` (everything: model card summary, dataset
counts and checks, preprocessing, device, protocols with per-draw values, the NMI clustering
record, the printed MATLAB lines) and ``per_query_<protocol>.csv`` (each query's rank of its
first positive, AP@R and R-precision, for single-draw protocols), beside ``run_info.json``.
See ``docs/metrics.md`` for the definitions.
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
from reproduce.evaluation.distributed import (
    extract_embeddings_distributed,
    init_from_env,
    launched_by_torchrun,
)
from reproduce.evaluation.embeddings import extract_embeddings
from reproduce.evaluation.metrics import faiss_gpus, nmi, nmi_available, retrieval_metrics
from reproduce.evaluation.preprocess import MATLAB_JPEG_QUALITY, NAMES, make_preprocessing
from reproduce.evaluation.recall import NO_POSITIVE, format_recall_lines
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


DEVICES = ("auto", "cpu", "cuda")
"""``--device`` choices: ``auto`` is CUDA when available, else the CPU."""


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a CUDA device, else ``cpu``; ``cuda`` without a
    device is an ``InputError``."""
    import torch

    if device not in DEVICES and not device.startswith("cuda:"):
        raise InputError(f"--device {device}: choose one of {list(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device is available here")
    return device


def _score(protocol: Protocol, feats: np.ndarray, position: np.ndarray, labels: np.ndarray,
           progress: bool, device: str = "cpu") -> dict[str, Any]:
    """Recall@K, MAP@R and R-precision of one protocol (means over its draws) and per-query
    values (single draw), all from one pass over each draw's distances.

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
    recalls, maps, rprecs, lone = [], [], [], []
    per_query = None
    for split in protocol.splits:
        res = retrieval_metrics(feats[position[split.query]], labels[split.query],
                                feats[position[split.database]], labels[split.database],
                                Ks, remove_diag=protocol.remove_diag, progress=progress,
                                device=device)
        recalls.append(res.recall.recall)
        maps.append(res.rank.map_at_r)
        rprecs.append(res.rank.mean_r_precision)
        lone.append(res.rank.num_without_positives)
        if len(protocol.splits) == 1:
            per_query = {"rank_first_positive": np.where(res.recall.rank == NO_POSITIVE, -1,
                                                         res.recall.rank),
                         "ap_at_r": res.rank.ap_at_r, "r_precision": res.rank.r_precision}
    mean = np.mean(np.stack(recalls), axis=0)
    per_draw = [r.tolist() for r in recalls]
    return {"Ks": Ks, "Ks_dropped": dropped, "recall": mean.tolist(), "per_draw": per_draw,
            "map_at_r": _nanmean(maps), "r_precision": _nanmean(rprecs),
            "map_at_r_per_draw": maps, "r_precision_per_draw": rprecs,
            "queries_without_positives_per_draw": lone,
            "printed": format_recall_lines(Ks, mean), "per_query": per_query}


def _nanmean(values: list[float]) -> float | None:
    """Mean over the draws; None when no draw has a value (no query with a positive)."""
    kept = [v for v in values if not np.isnan(v)]
    return float(np.mean(kept)) if kept else None


def _protocol_images(protocol: Protocol) -> np.ndarray:
    """Every dataset index a protocol uses (queries and databases of all its draws)."""
    return np.unique(np.concatenate([np.concatenate([s.query, s.database])
                                     for s in protocol.splits]))


def _nmi(protocol: Protocol, feats: np.ndarray, position: np.ndarray, labels: np.ndarray,
         device: str, done: dict[bytes, dict[str, Any]]) -> dict[str, Any]:
    """NMI over every image the protocol uses (k = their number of labels), computed once
    per image set (``done``); ``{"nmi": None, "nmi_skipped": why}`` without faiss/sklearn."""
    why = nmi_available()
    if why is not None:
        log.warning("%s: NMI skipped: %s", protocol.name, why)
        return {"nmi": None, "nmi_skipped": why}
    images = _protocol_images(protocol)
    key = images.tobytes()
    if key not in done:
        res = nmi(feats[position[images]], _label_vector(labels[images]),
                  gpu=device != "cpu" and faiss_gpus() > 0)
        done[key] = {"nmi": res.nmi, "nmi_clustering": res.record}
    return done[key]


def _label_vector(labels: np.ndarray) -> np.ndarray:
    """Column 1 of a label matrix, as the recall uses it."""
    labels = np.asarray(labels)
    return labels[:, 0] if labels.ndim == 2 else labels


def metric_rows(protocol: Protocol, scored: dict[str, Any]) -> list[dict[str, Any]]:
    """``metrics.csv`` rows of one protocol: R@K per K, then MAP@R, R-precision, NMI."""
    rows = [{"metric": f"R@{k}", "K": k, "value": r}
            for k, r in zip(scored["Ks"], scored["recall"], strict=True)]
    rows += [{"metric": name, "K": None, "value": scored[field]}
             for name, field in (("MAP@R", "map_at_r"), ("R-precision", "r_precision"),
                                 ("NMI", "nmi")) if scored.get(field) is not None]
    return [{"protocol": protocol.name, "family": protocol.family, **row, "unit": "fraction",
             "draws": len(protocol.splits)} for row in rows]


def evaluate(model_path: str | os.PathLike[str], dataset: str,
             root: str | os.PathLike[str] | None,
             protocol: str = "authors", out: str | os.PathLike[str] | None = DEFAULT_OUT,
             preprocessing: str | None = None, batch_size: int = 32, workers: int = 0,
             cache_dir: str | os.PathLike[str] | None = None, strict: bool = False,
             verify: str = "exists", jpeg_quality: int | None = MATLAB_JPEG_QUALITY,
             resize: str = "vl_imreadjpeg", progress: bool = True,
             interpolation: str = "bicubic", greyscale_mean: str = "first",
             list_file: str | os.PathLike[str] | None = None,
             device: str = "auto", distributed: bool | None = None) -> dict[str, Any]:
    """Evaluate a converted model; write results under ``<out>/evaluate/`` and return them.

    ``preprocessing``: ``matlab`` or ``torchvision``; ``None`` (default) uses the one the
    model card records (:func:`card_preprocessing`). ``protocol``: ``authors``
    (evaluate_model.m, default), ``reid`` (VehicleID only), ``all``,
    or protocol names separated by commas (``vid-small-authors``). ``cache_dir`` defaults to
    ``<out>/cache/embeddings``; ``jpeg_quality=None`` skips the JPEG re-encode after the
    256x256 pre-resize; ``interpolation`` (``bicubic``/``bilinear``) and ``greyscale_mean``
    (``first``/``per-channel``) are the ``matlab`` preprocessing's options. ``list_file``
    is the image list of ``dataset="list"`` (``root`` then defaults to its folder).
    ``device``: ``auto`` (CUDA when available), ``cpu`` or ``cuda``: where the embeddings are
    extracted and the distances searched (NMI's k-means runs on the GPU only with a GPU
    build of faiss). ``distributed`` (default: when started by ``torchrun`` with more than
    one process): every rank embeds a shard of the images
    (:func:`~reproduce.evaluation.distributed.extract_embeddings_distributed`) and rank 0
    scores and writes; the other ranks return ``{"rank": r, "protocols": {}, "folder": None}``.
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
                 "greyscale_mean": greyscale_mean, "device": device}
    ctx = None
    if launched_by_torchrun() if distributed is None else distributed:
        ctx = init_from_env()  # before resolve_device: "cuda" is then this rank's GPU
    run_device = resolve_device(device)
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
    extract = extract_embeddings if ctx is None else extract_embeddings_distributed
    feats = extract(model, card, [ds.paths[i] for i in needed], pre, batch_size=batch_size,
                    workers=workers, cache_dir=cache, progress=progress, device=run_device)
    if feats is None:  # a rank other than 0: its shard is with rank 0, which scores
        return {"rank": ctx.rank if ctx is not None else 0, "protocols": {}, "folder": None}
    folder = command_dir(out_root, "evaluate", arguments)
    results: dict[str, Any] = {}
    rows = []
    nmi_done: dict[bytes, dict[str, Any]] = {}
    for prot in protocols:
        scored = _score(prot, feats, position, ds.labels, progress, run_device)
        scored.update(_nmi(prot, feats, position, ds.labels, run_device, nmi_done))
        per_query = scored.pop("per_query")
        results[prot.name] = {**prot.record(), **scored}
        rows += [{"dataset": ds.name, **row, "preprocessing": pre.name,
                  "interpolation": pre.record().get("interpolation"),
                  "model": os.fspath(model_path), "device": run_device}
                 for row in metric_rows(prot, scored)]
        if per_query is not None:
            q = prot.splits[0].query
            write_csv(folder / f"per_query_{prot.name}.csv", pd.DataFrame({
                "index": q, "path": [os.fspath(ds.paths[i]) for i in q],
                "label": ds.labels[q], **per_query}))
        for line in scored["printed"].splitlines():
            log.info("[%s] %s", prot.name, line)
        log.info("[%s] MAP@R %s, R-precision %s, NMI %s", prot.name, scored["map_at_r"],
                 scored["r_precision"], scored["nmi"])
    write_csv(folder / "metrics.csv", pd.DataFrame(rows))
    summary = {"model": {"path": os.fspath(model_path),
                         "source_sha256": card.source_sha256,
                         "family": card.family,
                         "embedding_dim": int(feats.shape[1])},
               "dataset": ds.report(),
               "preprocessing": {**pre.record(), "chosen_by": chosen_by,
                                 "average_image_factor": factor},
               "device": run_device, "protocols": results}
    write_json(folder / "metrics.json", summary)
    summary["folder"] = folder
    return summary
