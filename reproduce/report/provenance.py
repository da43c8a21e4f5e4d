"""What an evaluated Recall@K was computed on, and whether that is the released model on the
full test set.

A value in the tables' ``evaluated`` column only stands beside the published one when it
comes from the released checkpoint (``net-epoch-N.mat`` at the epoch the authors released,
see :mod:`reproduce.report.released_models`), not a synthetic one, scored on every test
image the paper used. Anything else (another epoch, a handful of images, a synthetic
checkpoint, or a value whose epoch or image count nobody stated) is *partial*: it is kept and
shown, marked as such, and left out of the differences to the published numbers.

Where the facts come from, first found wins:
- the evaluation CSV's own columns ``epoch``, ``images``, ``published_images``, ``synthetic``;
- the converted model's card (``epoch``, ``synthetic``) when the ``model`` column is a ``.pt``;
- the JSON ``fastap evaluate`` writes beside its CSV (``dataset.count_checks``: test images
  found and published).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converters.fastap.card import ModelCard
from reproduce.report.csv_input import present
from reproduce.report.released_models import ReleasedModel

log = logging.getLogger(__name__)


def published_test_images(dataset: str, metric: str) -> int:
    """How many test images the paper's protocol scores for ``metric`` of ``dataset``."""
    from reproduce.evaluation.datasets import inshop, products, vehicleid

    if dataset == "products":
        return products.PUBLISHED["test images"]
    if dataset == "inshop":
        return inshop.PUBLISHED["query images"] + inshop.PUBLISHED["gallery images"]
    subset = metric.split(" ")[0].lower()
    return vehicleid.PUBLISHED_IMAGES[subset]


@dataclass(frozen=True)
class EvaluatedOn:
    """The checkpoint epoch, test images and origin behind one evaluated value."""

    epoch: int | None = None
    images: int | None = None
    published_images: int | None = None
    synthetic: bool = False

    def reasons(self, model: ReleasedModel) -> list[str]:
        """Why the value is not the released model on the full test set (empty when it is)."""
        found = []
        if self.synthetic:
            found.append("SYNTHETIC checkpoint")
        if self.epoch is None:
            found.append(f"checkpoint epoch not stated (released: {model.epoch})")
        elif self.epoch != model.epoch:
            found.append(f"epoch {self.epoch} checkpoint (released: epoch {model.epoch})")
        if self.images is None:
            found.append("number of test images not stated")
        elif self.published_images is not None and self.images != self.published_images:
            found.append(f"{self.images:,} of the {self.published_images:,} test images")
        return found

    def describe(self, model: ReleasedModel) -> str:
        """One line for the tables: the value's basis, starting PARTIAL when it is partial."""
        reasons = self.reasons(model)
        if reasons:
            return "PARTIAL: " + "; ".join(reasons)
        return (f"released epoch {model.epoch} checkpoint, full test set "
                f"({self.images:,} images)")


def _flag(value: Any) -> bool:
    """A CSV/JSON truth value (``True``, ``"true"``, ``1``)."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value) if present(value) else False


def _count(value: Any) -> int | None:
    """An integer count, or None when absent."""
    return int(float(value)) if present(value) else None


def _count_checks(csv_path: Path) -> list[dict[str, Any]] | None:
    """The dataset count checks of the evaluation JSON beside ``csv_path``, if any."""
    for candidate in sorted(csv_path.parent.glob("*.json")):
        if candidate.name == "run_info.json":
            continue
        try:
            data = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.warning("%s: not read (%s)", candidate, exc)
            continue
        dataset = data.get("dataset") if isinstance(data, dict) else None
        if isinstance(dataset, dict) and isinstance(dataset.get("count_checks"), list):
            return dataset["count_checks"]
    return None


def scored_image_checks(checks: list[dict[str, Any]], dataset: str, metric: str
                       ) -> list[dict[str, Any]]:
    """The checks that count the images ``metric`` is scored on (not train, not totals)."""
    chosen = [c for c in checks if str(c.get("what", "")).endswith("images")
              and not str(c.get("what", "")).startswith("train")
              and str(c.get("what", "")) != "images"]
    if dataset == "vid":
        subset = metric.split(" ")[0].lower()
        chosen = [c for c in chosen if str(c.get("what", "")).startswith(subset)]
    return chosen


def evaluated_on(row: Any, csv_path: Path, card: ModelCard | None, model: ReleasedModel,
                 metric: str) -> EvaluatedOn:
    """The basis of one evaluation CSV row (see the module doc for where each fact comes
    from)."""
    card_epoch = card.epoch if card else None
    epoch = _count(row.get("epoch")) if present(row.get("epoch")) else _count(card_epoch)
    synthetic = _flag(row.get("synthetic")) or bool(card and card.synthetic)
    published = published_test_images(model.dataset, metric)
    if present(row.get("images")):
        images = _count(row.get("images"))
        if present(row.get("published_images")):
            published = _count(row.get("published_images")) or published
    else:
        checks = _count_checks(csv_path)
        chosen = scored_image_checks(checks, model.dataset, metric) if checks else []
        images = sum(int(c["found"]) for c in chosen) if chosen else None
        if chosen:
            published = sum(int(c["expected"]) for c in chosen)
    return EvaluatedOn(epoch=epoch, images=images, published_images=published,
                       synthetic=synthetic)
