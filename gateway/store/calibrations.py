"""Stored calibrations of self-hosted backends: one versioned, dated row per ``tollgate calibrate``.

In the SQL store (migration 0004) so every gateway replica prices a backend from the same
measurement; a recalibration adds version n+1 and the replicas pick it up on their next
refresh (``gateway.capacity``). The row keeps the measured operating point, the throughputs the
price is derived from, the price at calibration time and the whole table of points.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    String,
    Table,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.store.models import MONEY, metadata

calibrations = Table(
    "calibrations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("backend", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("engine", String(16), nullable=False),
    Column("model", String(256), nullable=False),
    Column("gpu_hour_usd", MONEY, nullable=False),
    Column("gpus", Integer, nullable=False),
    Column("slo_p95_ms", Float, nullable=False),
    Column("slo_met", Boolean, nullable=False),
    Column("concurrency", Integer, nullable=False),
    Column("output_tps", Float, nullable=False),
    Column("input_tps", Float, nullable=False),
    Column("priced_output_tps", Float, nullable=False),
    Column("priced_input_tps", Float, nullable=False),
    Column("usd_per_mtok_input", MONEY, nullable=False),
    Column("usd_per_mtok_output", MONEY, nullable=False),
    Column("detail", JSON, nullable=False),  # the whole calibration: points, mix, probe
    UniqueConstraint("backend", "version", name="uq_calibrations_backend_version"),
)


@dataclass(frozen=True)
class StoredCalibration:
    """What the gateway uses of a calibration: throughputs for the price, the operating
    concurrency for the in-flight threshold."""

    backend: str
    version: int
    created_at: datetime
    concurrency: int
    priced_input_tps: float
    priced_output_tps: float
    output_tps: float
    input_tps: float
    slo_met: bool

    @property
    def label(self) -> str:
        return f"v{self.version} {self.created_at:%Y-%m-%d}"


def _stored(row: Any) -> StoredCalibration:
    created = row.created_at
    if created.tzinfo is None:  # SQLite gives naive datetimes back
        created = created.replace(tzinfo=UTC)
    return StoredCalibration(
        backend=row.backend,
        version=row.version,
        created_at=created,
        concurrency=row.concurrency,
        priced_input_tps=row.priced_input_tps,
        priced_output_tps=row.priced_output_tps,
        output_tps=row.output_tps,
        input_tps=row.input_tps,
        slo_met=row.slo_met,
    )


async def save_calibration(engine: AsyncEngine, result: dict[str, Any]) -> int:
    """Store a calibration (``gateway.analytics.calibration_stats.Calibration.to_dict()``) as the
    backend's next version; returns that version."""
    for _ in range(5):  # two calibrations of one backend at once: the loser takes the next number
        try:
            async with engine.begin() as conn:
                latest = await conn.scalar(
                    select(func.max(calibrations.c.version)).where(
                        calibrations.c.backend == result["backend"]
                    )
                )
                version = int(latest or 0) + 1
                await conn.execute(
                    calibrations.insert().values(
                        id=uuid.uuid4().hex,
                        backend=result["backend"],
                        version=version,
                        created_at=datetime.now(UTC),
                        engine=result["engine"],
                        model=result["model"],
                        gpu_hour_usd=Decimal(str(result["gpu_hour_usd"])),
                        gpus=int(result["gpus"]),
                        slo_p95_ms=float(result["slo_p95_ms"]),
                        slo_met=bool(result["slo_met"]),
                        concurrency=int(result["concurrency"]),
                        output_tps=float(result["output_tokens_per_second"]),
                        input_tps=float(result["input_tokens_per_second"]),
                        priced_output_tps=float(result["priced_output_tokens_per_second"]),
                        priced_input_tps=float(result["priced_input_tokens_per_second"]),
                        usd_per_mtok_input=Decimal(str(result["usd_per_mtok_input"])),
                        usd_per_mtok_output=Decimal(str(result["usd_per_mtok_output"])),
                        detail={**result, "version": version},
                    )
                )
            return version
        except IntegrityError:
            continue
    raise RuntimeError(f"could not store a calibration of {result['backend']!r}")


async def latest_calibrations(engine: AsyncEngine) -> dict[str, StoredCalibration]:
    """The newest calibration of every calibrated backend."""
    newest = (
        select(calibrations.c.backend, func.max(calibrations.c.version).label("version"))
        .group_by(calibrations.c.backend)
        .subquery()
    )
    query = select(calibrations).join(
        newest,
        (calibrations.c.backend == newest.c.backend) & (calibrations.c.version == newest.c.version),
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return {row.backend: _stored(row) for row in rows}


async def calibration_history(engine: AsyncEngine, backend: str) -> list[dict[str, Any]]:
    """Every stored calibration of a backend, newest first (the full records)."""
    query = (
        select(calibrations.c.detail, calibrations.c.created_at)
        .where(calibrations.c.backend == backend)
        .order_by(calibrations.c.version.desc())
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return [{**row.detail, "stored_at": row.created_at.isoformat()} for row in rows]
