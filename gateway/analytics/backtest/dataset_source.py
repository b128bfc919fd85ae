"""Where a dataset replay's queries come from: the datasets (``../shared/data``, a data
directory or one RouterBench file) and a seeded sample of them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from predictors.datasets import OutcomeTable


def load_dataset(spec: str, data_dir: str | Path | None = None) -> OutcomeTable:
    """``routerbench``, ``routerbench:<file>[,<file>]``, ``mmlu-pro``, a data directory laid out
    like ``../shared/data``, or a RouterBench-format CSV file inside a ``routerbench/`` folder."""
    from predictors.datasets import read_mmlu_pro, read_routerbench

    name, _, files = spec.partition(":")
    if name == "routerbench":
        return read_routerbench(data_dir, files.split(",")) if files else read_routerbench(data_dir)
    if name == "mmlu-pro":
        return read_mmlu_pro(data_dir)
    path = Path(spec)
    if path.is_file() and path.suffix == ".csv" and path.parent.name == "routerbench":
        return read_routerbench(path.parent.parent, [path.stem])
    if path.is_dir():
        if (path / "routerbench").is_dir():
            return read_routerbench(path)
        if (path / "mmlu-pro").is_dir():
            return read_mmlu_pro(path)
    raise ValueError(
        f"unknown dataset {spec!r}: use routerbench, routerbench:<file>, mmlu-pro, a data "
        "directory (with routerbench/ or mmlu-pro/) or a routerbench/<file>.csv path"
    )


def sample_ids(ids: Sequence[str], limit: int | None, seed: int = 0) -> list[str]:
    """A seeded random sample of ``limit`` ids (all of them, in order, without a limit)."""
    if limit is None or limit >= len(ids):
        return list(ids)
    import numpy as np

    order = np.random.default_rng(seed).permutation(len(ids))[:limit]
    return [ids[i] for i in sorted(order)]
