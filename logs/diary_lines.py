"""Recognise one line of a FastAP MATLAB diary: one pattern and one parse function per kind.

The kinds follow the print statements of the authors' code (``run_demo.m``,
``train_hard.m``, ``train_hard_vid.m``, ``evaluate_model.m``, ``get_model.m``,
``+imdb/*.m``) and what MATLAB itself prints in between (``disp`` of structs, ``whos``,
``tic``/``toc``, warnings, errors). ``logInfo`` prints ``caller: message`` where the
caller may be spelled ``processEpoch`` or ``train_hard>processEpoch``; both are accepted.

:func:`classify` returns a :class:`DiaryLine` (kind + parsed fields) or ``None`` for a line
no kind matches. Which block an indented ``name: value`` line belongs to (the options,
``disp(imdb.images)``, a ``gpuDevice`` display) depends on its neighbours, so that is left
to the parser.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# ---- kinds -------------------------------------------------------------------------------
BLANK = "blank"
FIELD = "field"  # indented `name: value` (disp of a struct)
MODEL = "model"  # get_model: resnet50 in 1.23s
IMDB_NAME = "imdb_name"  # get_imdb: IMDB: products_224
IMDB_META = "imdb_meta"  # get_imdb: Analyzing meta-classes...
IMDB_LOADED = "imdb_loaded"  # get_imdb: products_224 in 12.34 sec
IMDB_BUILD = "imdb_build"  # products: train: 59551 / vid: test-small: 6493 imgs / progress
EXP_DIR = "exp_dir"  # process_opts: creating opts.expDir: ...
RESUME = "resume"  # train_hard: resuming by loading epoch 6
GPU_RESET = "gpu_reset"  # train_hard: resetting GPU
DISPLAY_HEADER = "display_header"  # `ans =` / `CUDADevice with properties:`
EPOCH_START = "epoch_start"  # processEpoch: Epoch 3/30: solver.adam LR=1.000000e-05
META_CLASSES = "meta_classes"  # processEpoch: 12 meta-classes, 5 batches per meta-class pair
PROGRESS = "progress"  # products-train_staged ep03:  25/330 (256) 57.3Hz obj: 0.612 (0.571)
EPOCH_END = "epoch_end"  # processEpoch: Epoch 3, Avg train obj = 0.5234
CHECKPOINT = "checkpoint"  # saveState: saved: <expDir>/net-epoch-3.mat
POSTEPOCH = "postepoch"  # postepoch: <expID> | <identifier> | <date> | GPU #1 on host
ENCODE = "encode"  # cnn_encode: Testing [resnet50] on 60502 -> feats_l2
EVAL_HEADER = "eval_header"  # evaluate_model: [products] Recall & NMI ... / Recall on [Small]
RECALL = "recall"  # K:    1, Recall: 0.764
ELAPSED = "elapsed"  # Elapsed time is 12.345678 seconds.
WHOS_HEADER = "whos_header"  # whos table header
WHOS_ROW = "whos_row"  # whos table row
COMPLETE = "complete"  # train_hard: Complete: 30 epochs.
MATLAB_WARNING = "matlab_warning"  # Warning: ...
MATLAB_ERROR = "matlab_error"  # Error using ... / Error in ... (line N) / Operation terminated
MATLAB_TRACE = "matlab_trace"  # > In train_hard>loadState (line 398)

ALL_KINDS = (
    BLANK, FIELD, MODEL, IMDB_NAME, IMDB_META, IMDB_LOADED, IMDB_BUILD, EXP_DIR, RESUME,
    GPU_RESET, DISPLAY_HEADER, EPOCH_START, META_CLASSES, PROGRESS, EPOCH_END, CHECKPOINT,
    POSTEPOCH, ENCODE, EVAL_HEADER, RECALL, ELAPSED, WHOS_HEADER, WHOS_ROW, COMPLETE,
    MATLAB_WARNING, MATLAB_ERROR, MATLAB_TRACE,
)

#: Evaluation subsets of VehicleID as ``evaluate_model.m`` names them.
VID_SETS = ("Small", "Medium", "Large")


@dataclass
class DiaryLine:
    """One recognised line: its kind and the values read from it."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)


# ---- numbers and values -------------------------------------------------------------------
_NUMBER = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|NaN|Inf)"


def parse_number(text: str) -> float:
    """A number as MATLAB prints it (``0.612``, ``1.000000e-05``, ``NaN``, ``-Inf``)."""
    return float(text)


def parse_matlab_value(raw: str) -> Any:
    """The value of a ``disp(struct)`` line: quoted text, number, row vector or ``[]``.

    Anything else (``{60502x1 cell}``, ``[60502x2 single]``, ``@train_hard``) is kept as the
    text MATLAB printed.
    """
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    if text == "[]":
        return None
    if re.fullmatch(_NUMBER, text):
        return _int_if_integral(parse_number(text))
    vector = _VECTOR.fullmatch(text)
    if vector:
        return [_int_if_integral(parse_number(v)) for v in re.split(r"[\s,]+", vector.group(1))]
    return text


def _num(pattern: str) -> re.Pattern[str]:
    """Compile ``pattern`` with each ``<NUM>`` standing for a MATLAB-printed number."""
    return re.compile(pattern.replace("<NUM>", _NUMBER))


_VECTOR = _num(r"\[\s*((?:<NUM>)(?:[\s,]+(?:<NUM>))*)\s*\]")


def _int_if_integral(value: float) -> int | float:
    """``256.0`` -> ``256``; non-integral, NaN and Inf stay float."""
    if math.isfinite(value) and value == int(value) and abs(value) < 2**53:
        return int(value)
    return value


# ---- line patterns (MATLAB prints, not logInfo) -------------------------------------------
_FIELD = re.compile(r"^\s+(?P<name>[A-Za-z]\w*): ?(?P<value>.*)$")
_PROGRESS = _num(
    r"^(?P<dataset>\w+?)-(?P<mode>train_staged|train|val) ep(?P<epoch>\d+):\s*(?P<batch>\d+)/"
    r"\s*(?P<batches>\d+) \((?P<batch_size>\d+)\) (?P<hz><NUM>)Hz obj: (?P<obj><NUM>) "
    r"\((?P<mean><NUM>)\)$"
)
_RECALL = _num(r"^K:\s*(?P<K>\d+), Recall: (?P<recall><NUM>)$")
_ELAPSED = _num(r"^Elapsed time is (?P<seconds><NUM>) seconds\.$")
_WHOS_HEADER = re.compile(r"^\s*Name\s+Size\s+Bytes\s+Class\s+Attributes\s*$")
_WHOS_ROW = re.compile(
    r"^\s+(?P<name>[A-Za-z]\w*)\s+(?P<rows>\d+)[x\u00d7](?P<cols>\d+)\s+(?P<bytes>\d+)\s+"
    r"(?P<cls>\w+)(?:\s+\w+)?\s*$"
)
_DISPLAY_HEADER = re.compile(r"^\s*(?:ans|\w+) =\s*$|^\s*\w+ with properties:\s*$")
_WARNING = re.compile(r"^\s*Warning: (?P<message>.*)$")
_ERROR = re.compile(
    r"^\s*(?:Error using (?P<using>.+)|Error in (?P<where>.+)|Error: (?P<message>.*)"
    r"|(?P<terminated>Operation terminated by user.*))$"
)
_TRACE = re.compile(r"^\s*>?\s*In (?P<where>\S+) \(line (?P<line>\d+)\)\s*$")
_LOGINFO = re.compile(r"^(?P<caller>[A-Za-z]\w*(?:>[A-Za-z]\w*)*): (?P<message>.*)$")

# ---- logInfo messages, by the function that printed them -----------------------------------
_EPOCH_START = _num(
    r"^Epoch (?P<epoch>\d+)/(?P<num_epochs>\d+): (?P<solver>\S*) LR=(?P<lr><NUM>)$")
_META_PAIRS = re.compile(
    r"^(?P<meta_classes>\d+) meta-classes, (?P<batches_per_pair>\d+) batches per meta-class pair$"
)
_META_BATCHES = re.compile(r"^(?P<meta_classes>\d+) meta-classes, (?P<batches>\d+) batches$")
_EPOCH_END = _num(
    r"^Epoch (?P<epoch>\d+), Avg (?P<mode>\w+) obj = (?P<objective><NUM>)$")
_MODEL = _num(r"^(?P<arch>\S+) in (?P<seconds><NUM>)s$")
_IMDB_NAME = re.compile(r"^IMDB: (?P<imdb>\S+)$")
_IMDB_LOADED = _num(r"^(?P<imdb>\S+) in (?P<seconds><NUM>) sec$")
_SAVED = re.compile(r"^saved: (?P<path>.*?net-epoch-(?P<epoch>\d+)\.mat)\s*$")
_ENCODE = re.compile(r"^Testing \[(?P<arch>[^\]]*)\] on (?P<count>\d+) -> (?P<var>\w+)$")
_EVAL = re.compile(
    r"^\[(?P<dataset>[^\]]*)\] Recall(?: & NMI)?(?: on \[(?P<subset>[^\]]+)\])? \.\.\.$"
)
_COMPLETE = re.compile(r"^Complete: (?P<epochs>\d+) epochs\.$")
_RESUME = re.compile(r"^resuming by loading epoch (?P<epoch>\d+)$")
_GPU = re.compile(r"^GPU #(?P<gpu>\d+) on (?P<host>.*)$")
_DATE = re.compile(r"^\d{1,2}-[A-Z][a-z]{2}-\d{4}(?: \d{2}:\d{2}:\d{2})?$")
_EXP_ID = re.compile(r"^(?P<dataset>\w+)-(?P<obj>\w+)-(?P<dim>\d+)-(?P<arch>\w+)$")
_IDENTIFIER = re.compile(r"^(?P<prefix>.*)-(?P<nbins>\d+)bins-batch(?P<batch_size>\d+)-.*-WD.*$")
_IMDB_BUILD = re.compile(
    r"^\s*(?:train|test|test-small|test-medium|test-large): \d+(?: imgs)?$|^\d+/\d+: .*$"
)


def _numbers(match: re.Match[str], *names: str) -> dict[str, Any]:
    """The named groups of ``match``; those listed in ``names`` as numbers."""
    data: dict[str, Any] = dict(match.groupdict())
    for name in names:
        if data.get(name) is not None:
            data[name] = _int_if_integral(parse_number(data[name]))
    return data


def parse_field(line: str) -> DiaryLine | None:
    """An indented ``name: value`` line of ``disp(struct)``."""
    match = _FIELD.match(line)
    if not match:
        return None
    raw = match.group("value")
    return DiaryLine(FIELD, {"name": match.group("name"), "raw": raw,
                             "value": parse_matlab_value(raw)})


def parse_progress(line: str) -> DiaryLine | None:
    """``<dataset>-<mode> epNN: b/B (M) xHz obj: o (mean)`` (every 30 s in an epoch)."""
    match = _PROGRESS.match(line)
    if not match:
        return None
    return DiaryLine(PROGRESS, _numbers(match, "epoch", "batch", "batches", "batch_size", "hz",
                                        "obj", "mean"))


def parse_recall(line: str) -> DiaryLine | None:
    """``K: %4d, Recall: %.3f`` from ``evaluate_recall``."""
    match = _RECALL.match(line)
    return DiaryLine(RECALL, _numbers(match, "K", "recall")) if match else None


def parse_elapsed(line: str) -> DiaryLine | None:
    """``Elapsed time is X seconds.`` from a bare ``toc``."""
    match = _ELAPSED.match(line)
    return DiaryLine(ELAPSED, _numbers(match, "seconds")) if match else None


def parse_whos(line: str) -> DiaryLine | None:
    """The header or a row of a ``whos`` table."""
    if _WHOS_HEADER.match(line):
        return DiaryLine(WHOS_HEADER)
    match = _WHOS_ROW.match(line)
    return DiaryLine(WHOS_ROW, _numbers(match, "rows", "cols", "bytes")) if match else None


def parse_display_header(line: str) -> DiaryLine | None:
    """``ans =`` or ``CUDADevice with properties:`` (an unterminated ``gpuDevice`` call)."""
    if not _DISPLAY_HEADER.match(line):
        return None
    return DiaryLine(DISPLAY_HEADER, {"text": line.strip()})


def parse_matlab_message(line: str) -> DiaryLine | None:
    """MATLAB's own warnings, errors and their ``In file (line N)`` traces."""
    match = _WARNING.match(line)
    if match:
        return DiaryLine(MATLAB_WARNING, {"message": match.group("message")})
    match = _ERROR.match(line)
    if match:
        return DiaryLine(MATLAB_ERROR, {"message": line.strip()})
    match = _TRACE.match(line)
    if match:
        return DiaryLine(MATLAB_TRACE, _numbers(match, "line"))
    return None


def parse_process_epoch(message: str) -> DiaryLine | None:
    """Messages of ``processEpoch`` (epoch start, meta-classes, epoch average)."""
    match = _EPOCH_START.match(message)
    if match:
        return DiaryLine(EPOCH_START, _numbers(match, "epoch", "num_epochs", "lr"))
    match = _META_PAIRS.match(message)
    if match:
        return DiaryLine(META_CLASSES, _numbers(match, "meta_classes", "batches_per_pair"))
    match = _META_BATCHES.match(message)
    if match:
        return DiaryLine(META_CLASSES, _numbers(match, "meta_classes", "batches"))
    match = _EPOCH_END.match(message)
    if match:
        return DiaryLine(EPOCH_END, _numbers(match, "epoch", "objective"))
    return None


def parse_get_model(message: str) -> DiaryLine | None:
    """``get_model: <arch> in 1.23s``."""
    match = _MODEL.match(message)
    return DiaryLine(MODEL, _numbers(match, "seconds")) if match else None


def parse_get_imdb(message: str) -> DiaryLine | None:
    """``get_imdb: IMDB: <name>``, ``Analyzing meta-classes...``, ``<name> in X sec``."""
    match = _IMDB_NAME.match(message)
    if match:
        return DiaryLine(IMDB_NAME, match.groupdict())
    if message == "Analyzing meta-classes...":
        return DiaryLine(IMDB_META)
    match = _IMDB_LOADED.match(message)
    return DiaryLine(IMDB_LOADED, _numbers(match, "seconds")) if match else None


def parse_imdb_build(message: str) -> DiaryLine | None:
    """What ``+imdb/products.m`` etc. print when they build an imdb from the text files."""
    return DiaryLine(IMDB_BUILD, {"message": message}) if _IMDB_BUILD.match(message) else None


def parse_save_state(message: str) -> DiaryLine | None:
    """``saveState: saved: <expDir>/net-epoch-N.mat``."""
    match = _SAVED.match(message)
    return DiaryLine(CHECKPOINT, _numbers(match, "epoch")) if match else None


def parse_postepoch(message: str) -> DiaryLine | None:
    """``postepoch:`` lines: experiment id, identifier, date, ``GPU #g on host``."""
    match = _GPU.match(message)
    if match:
        return DiaryLine(POSTEPOCH, {"what": "gpu", **_numbers(match, "gpu")})
    if _DATE.match(message):
        return DiaryLine(POSTEPOCH, {"what": "date", "date": message})
    match = _EXP_ID.match(message)
    if match:
        return DiaryLine(POSTEPOCH, {"what": "expID", "expID": message})
    match = _IDENTIFIER.match(message)
    if match:
        return DiaryLine(POSTEPOCH, {"what": "identifier", "identifier": message})
    return None


def parse_cnn_encode(message: str) -> DiaryLine | None:
    """``cnn_encode: Testing [arch] on N -> feats_l2``."""
    match = _ENCODE.match(message)
    return DiaryLine(ENCODE, _numbers(match, "count")) if match else None


def parse_evaluate_model(message: str) -> DiaryLine | None:
    """``evaluate_model: [ds] Recall & NMI ...`` / ``Recall ...`` / ``Recall on [Small] ...``."""
    match = _EVAL.match(message)
    return DiaryLine(EVAL_HEADER, match.groupdict()) if match else None


def parse_train_hard(message: str) -> DiaryLine | None:
    """``train_hard``/``train_hard_vid``: resume, GPU reset, completion."""
    match = _RESUME.match(message)
    if match:
        return DiaryLine(RESUME, _numbers(match, "epoch"))
    if message == "resetting GPU":
        return DiaryLine(GPU_RESET)
    match = _COMPLETE.match(message)
    return DiaryLine(COMPLETE, _numbers(match, "epochs")) if match else None


def parse_process_opts(message: str) -> DiaryLine | None:
    """``process_opts: creating opts.expDir: <dir>`` (printed before the diary opens, usually)."""
    if message.startswith("creating opts.expDir: "):
        return DiaryLine(EXP_DIR, {"path": message[len("creating opts.expDir: "):]})
    return None


#: logInfo callers (the bare function name) and the parser of their messages.
LOGINFO_PARSERS: dict[str, Callable[[str], DiaryLine | None]] = {
    "processEpoch": parse_process_epoch,
    "get_model": parse_get_model,
    "get_imdb": parse_get_imdb,
    "products": parse_imdb_build,
    "inshop": parse_imdb_build,
    "vid": parse_imdb_build,
    "saveState": parse_save_state,
    "postepoch": parse_postepoch,
    "cnn_encode": parse_cnn_encode,
    "evaluate_model": parse_evaluate_model,
    "train_hard": parse_train_hard,
    "train_hard_vid": parse_train_hard,
    "train_rand": parse_train_hard,
    "process_opts": parse_process_opts,
    "get_opts": parse_process_opts,
}


def parse_loginfo(line: str) -> DiaryLine | None:
    """A ``caller: message`` line whose caller and message are known."""
    match = _LOGINFO.match(line)
    if not match:
        return None
    caller = match.group("caller")
    function = caller.rsplit(">", 1)[-1]
    parser = LOGINFO_PARSERS.get(function)
    if parser is None:
        return None
    parsed = parser(match.group("message"))
    if parsed is not None:
        parsed.data["caller"] = caller
    return parsed


#: Parsers tried in order on a line (the first that matches wins).
_PARSERS: tuple[Callable[[str], DiaryLine | None], ...] = (
    parse_recall, parse_progress, parse_elapsed, parse_matlab_message, parse_whos,
    parse_loginfo, parse_display_header, parse_field,
)


def classify(line: str) -> DiaryLine | None:
    """The kind and values of one diary line (no line end), or ``None`` if no kind matches."""
    if not line.strip():
        return DiaryLine(BLANK)
    for parser in _PARSERS:
        parsed = parser(line)
        if parsed is not None:
            return parsed
    return None
