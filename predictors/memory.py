"""The outcome model's nearest-neighbour memory: the training queries' vectors (int8), their
outcomes and answer lengths, and the search over them.

This module owns the neighbour search (:func:`top_k` over :func:`similarity`, run on ONNX
Runtime in the calling thread), the means a query takes from its neighbours
(:func:`nan_mean`; :func:`memory_mean` for training), the int8 quantisation of the memory's
vectors and the answer-length arrays (:func:`length_arrays`). ``predictors.outcome_model``
blends them into P(success) and the answer-length ratio.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np


def nan_mean(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Mean over axis 1 of ``values`` where ``known`` (n, k, profiles) -> (n, profiles); NaN
    where nothing is known."""
    total = values.sum(axis=1)
    count = known.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):  # 0/0: no labelled neighbour
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return np.asarray(mean, dtype=np.float32)


def length_arrays(lengths: np.ndarray) -> dict[str, np.ndarray]:
    """The memory's answer lengths (output tokens, NaN unknown; float16, capped at 60,000)
    and each profile's mean (NaN: none known)."""
    values = np.minimum(np.asarray(lengths, dtype=np.float32), 60000.0)
    known = ~np.isnan(values)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(known.any(axis=0), np.nansum(values, axis=0) / known.sum(axis=0), np.nan)
    return {"knn_len": values.astype(np.float16), "len_mean": mean.astype(np.float32)}


def memory_mean(x: np.ndarray, mem_x: np.ndarray, mem_y: np.ndarray, k: int) -> np.ndarray:
    """Mean label of the ``k`` most similar rows of an int8 memory (numpy; for training)."""
    memory = mem_x.astype(np.float32) / 127.0
    labelled = ~np.isnan(mem_y)
    labels = np.nan_to_num(mem_y, nan=0.0)
    k = min(k, memory.shape[0])
    out = np.empty((x.shape[0], mem_y.shape[1]), dtype=np.float32)
    for start in range(0, x.shape[0], 512):
        sims = x[start : start + 512] @ memory.T
        nn = np.argpartition(-sims, kth=k - 1, axis=1)[:, :k]
        out[start : start + 512] = nan_mean(labels[nn], labelled[nn])
    return out


def top_k(sims: np.ndarray, k: int, stride: int = 8) -> np.ndarray:
    """Column indices of each row's ``k`` largest values: exactly the set
    ``np.argpartition(-sims, k - 1, axis=1)[:, :k]`` gives (in another order).

    A full selection runs over all of the memory's 9,401 similarities per query; this one
    partitions every ``stride``-th value first: the ``k``-th largest of those is a lower bound
    on the row's ``k``-th largest, and only the values at or above it (a few hundred) are
    selected among. Where the ``k``-th value is tied (duplicate memory rows), which of the
    tied rows count is arbitrary, so such a row takes the full selection: the same
    neighbours as before, not merely as many.
    """
    sample = sims[:, ::stride]
    if k < 1 or sample.shape[1] <= k:
        return np.argpartition(-sims, kth=k - 1, axis=1)[:, :k]
    bound = np.partition(sample, sample.shape[1] - k, axis=1)[:, -k]
    out = np.empty((sims.shape[0], k), dtype=np.intp)
    for i, row in enumerate(sims):
        idx = np.flatnonzero(row >= bound[i])  # at least k: the sample's top k are in it
        vals = row[idx]
        if idx.size >= k:  # fewer: NaN similarities
            part = np.argpartition(vals, idx.size - k)
            if np.count_nonzero(vals >= vals[part[idx.size - k]]) == k:  # a unique top k
                out[i] = idx[part[idx.size - k :]]
                continue
        # a tie at the k-th value: the full selection picks among the tied, as it always did
        out[i] = np.argpartition(-row, kth=k - 1)[:k]
    return out


def quantize(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(x) * 127.0), -127, 127).astype(np.int8)


def similarity(memory: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``x @ memory.T`` for the neighbour search, on ONNX Runtime in the *calling* thread.

    Why not numpy or torch: right after an embedding, ONNX Runtime's encoder threads are still
    spinning on both cores, and a BLAS or OpenMP pool starting two more threads fights them
    (one decision: ~8 ms with numpy, ~24 ms with torch, ~5-6 ms this way; 2-core CPU). A
    one-thread session runs the MatMul on the caller's core with no pool to wake.
    """
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:  # numpy still gives the same numbers, a little slower
        return lambda x: np.asarray(x @ memory.T, dtype=np.float32)
    n, d = memory.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "memory_t"], ["sims"])],
        "knn-similarity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, d])],
        [helper.make_tensor_value_info("sims", TensorProto.FLOAT, [None, n])],
        [numpy_helper.from_array(np.ascontiguousarray(memory.T), "memory_t")],
    )
    # IR version 8 (opset 17): readable by any onnxruntime from 1.14 on, whatever onnx made it
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # an onnxruntime that cannot run it: numpy, same numbers
        logging.getLogger(__name__).warning("neighbour search on numpy: %s", exc)
        return lambda x: np.asarray(x @ memory.T, dtype=np.float32)
    return lambda x: np.asarray(session.run(None, {"x": x})[0], dtype=np.float32)
