"""Decode and check request items; build item results and model descriptions. Each problem is an `ItemProblem` for
that item alone."""

from __future__ import annotations

import json

import grpc
import numpy as np

from aelstm.core.bundle import MAX_SCALED
from aelstm.core.policy import Verdict
from aelstm.v1 import scoring_pb2 as pb

from .registry import ModelEntry

INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
INTERNAL = grpc.StatusCode.INTERNAL.value[0]


QUOTE_CHARS = 64


def quote(text: str, limit: int = QUOTE_CHARS) -> str:
    """`text` for an error message: repr'd, and cut to `limit` characters (never echo unbounded input)."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text.encode())} bytes)"


def show_shape(shape: tuple[int, ...]) -> str:
    return str(list(shape)) if len(shape) <= 4 else f"{len(shape)} dimensions"


class ItemProblem(Exception):
    """Why one item cannot be scored, as a google.rpc code and a message saying what to fix."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def decode_tensor(tensor: pb.Tensor, what: str) -> np.ndarray:
    """A `Tensor` as a float32 array of its declared 2-D shape."""
    shape = tuple(int(d) for d in tensor.shape)
    if len(shape) != 2 or 0 in shape:
        raise ItemProblem(INVALID_ARGUMENT, f"{what} shape must be [rows, features] with both > 0, got "
                                            f"{show_shape(shape)}")
    size = shape[0] * shape[1]
    kind = tensor.WhichOneof("data")
    if kind == "packed":
        if len(tensor.packed) != 4 * size:
            raise ItemProblem(INVALID_ARGUMENT, f"{what} has {len(tensor.packed)} packed bytes; shape {list(shape)} "
                                                f"needs {4 * size} (float32, little-endian)")
        return np.frombuffer(tensor.packed, dtype="<f4").reshape(shape)
    if kind == "values":
        if len(tensor.values.values) != size:
            raise ItemProblem(INVALID_ARGUMENT, f"{what} has {len(tensor.values.values)} values; shape "
                                                f"{list(shape)} needs {size}")
        return np.asarray(tensor.values.values, dtype=np.float32).reshape(shape)
    raise ItemProblem(INVALID_ARGUMENT, f"{what} carries no data: set `packed` or `values`")


def plainly_scorable(values: np.ndarray, entry: ModelEntry) -> bool:
    """Every value is a reading (no gap) well inside what the model scores: the usual item, accepted with one
    comparison per value; anything else gets the checks that name its problem."""
    low, high = entry.bundle.scorable_range32
    return bool(((values >= low) & (values <= high)).all())


def packed_windows(items, entry: ModelEntry) -> np.ndarray | None:
    """The windows of `items` as one `[n, window, features]` array when every item is a packed `window` of the
    model's shape whose values are plainly scorable: the usual request, decoded and checked in one step instead of
    item by item (None: some item needs the checks that name its problem)."""
    shape = (entry.bundle.window, len(entry.bundle.features))
    size = 4 * shape[0] * shape[1]
    packed = []
    for item in items:
        window = item.window  # empty unless the item carries a window
        if len(window.packed) != size or tuple(window.shape) != shape:
            return None
        packed.append(window.packed)
    windows = np.frombuffer(b"".join(packed), dtype="<f4").reshape(len(packed), *shape)
    return windows if plainly_scorable(windows, entry) else None


def check_features(values: np.ndarray, entry: ModelEntry, what: str) -> None:
    features = len(entry.bundle.features)
    if values.shape[1] != features:
        raise ItemProblem(INVALID_ARGUMENT, f"{what} has {values.shape[1]} features; model {entry.bundle.name} "
                                            f"expects {features} {list(entry.bundle.features)}")
    if not plainly_scorable(values, entry):
        check_values(values, entry, what)


def check_values(values: np.ndarray, entry: ModelEntry, what: str) -> None:
    """The exact checks, naming the problem: no ±Inf, nothing outside the range the model scores."""
    if np.isinf(values).any():
        raise ItemProblem(INVALID_ARGUMENT, f"{what} contains ±Inf; send NaN for a missing reading")
    low, high = entry.bundle.scorable_range
    wide = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        outside = ((wide < low) | (wide > high)).any(axis=0)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ItemProblem(INVALID_ARGUMENT, f"{what} has values of feature {entry.bundle.features[i]!r} outside "
                                            f"[{low[i]:.6g}, {high[i]:.6g}], the limit of model "
                                            f"{entry.bundle.name} ({MAX_SCALED:g} training ranges): beyond it "
                                            f"the score would overflow float32")


def check_window(window: np.ndarray, entry: ModelEntry) -> np.ndarray:
    """A scorable `window` item: right shape, values the model can score, and a reading for every feature."""
    expected = (entry.bundle.window, len(entry.bundle.features))
    if window.shape != expected:
        raise ItemProblem(INVALID_ARGUMENT, f"window shape {list(window.shape)} does not match model "
                                            f"{entry.bundle.name}: expected [window={expected[0]}, "
                                            f"features={expected[1]}]")
    if plainly_scorable(window, entry):  # no gap to fill
        return window
    check_values(window, entry, "window")
    return check_fillable(window, entry)


def check_fillable(window: np.ndarray, entry: ModelEntry) -> np.ndarray:
    """Every feature has at least one reading in the window (or in each of windows `[k, window, features]`), so
    its gaps (NaN) can be filled. Device windows need only this check: their readings were checked as they
    arrived."""
    empty = np.isnan(window).all(axis=-2).reshape(-1, window.shape[-1]).any(axis=0)
    if empty.any():
        names = [entry.bundle.features[i] for i in np.flatnonzero(empty)]
        raise ItemProblem(INVALID_ARGUMENT, f"window has no readings at all (only NaN) for {names}: cannot fill gaps")
    return window


def error_result(item: pb.Item, code: int, message: str, entry: ModelEntry | None = None) -> pb.ItemResult:
    result = pb.ItemResult(device_id=item.device_id, status=pb.ITEM_STATUS_ERROR, timestamp_ms=item.timestamp_ms,
                           error=pb.ItemError(code=code, message=message))
    if entry is not None:
        result.model_name, result.model_version = entry.bundle.name, entry.version
    return result


def warming_result(item: pb.Item, held: int, entry: ModelEntry) -> pb.ItemResult:
    return pb.ItemResult(device_id=item.device_id, status=pb.ITEM_STATUS_WARMING_UP, readings_held=held,
                         readings_needed=entry.bundle.window, timestamp_ms=item.timestamp_ms,
                         model_name=entry.bundle.name, model_version=entry.version)


def score_result(item: pb.Item, entry: ModelEntry, score: float, rec: float, pred: float, verdict: Verdict,
                 alarmed: int | None = None) -> pb.ItemResult:
    """A scored item: one window's score and verdict; `alarmed` windows of the item's readings alarmed (for a
    `window` item, its own verdict)."""
    alarmed = int(verdict.alarm) if alarmed is None else alarmed
    return pb.ItemResult(device_id=item.device_id, status=pb.ITEM_STATUS_OK, score=score, rec_part=rec,
                         pred_part=pred, alarm_score=verdict.alarm_score, threshold=verdict.threshold,
                         is_anomaly=alarmed > 0, alarmed_windows=alarmed, model_name=entry.bundle.name,
                         model_version=entry.version, timestamp_ms=item.timestamp_ms)


def model_info(entry: ModelEntry, drift: float | None = None) -> pb.ModelInfo:
    """What GetModel and ListModels say about a served model (`drift`: see `server.drift`)."""
    b = entry.bundle
    return pb.ModelInfo(fleet_id="" if entry.is_default else entry.fleet, model_name=b.name,
                        model_version=entry.version, window=b.window, features=list(b.features),
                        threshold=b.threshold, threshold_method=b.threshold_method,
                        is_default=entry.is_default, manifest_json=json.dumps(b.manifest), drift=drift)
