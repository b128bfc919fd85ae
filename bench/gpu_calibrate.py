"""Calibrate a model server the way ``tollgate calibrate`` does, from a machine without the
gateway's dependencies (the GPU machine: its Python has httpx, not SQLAlchemy or litellm).

Imports only ``gateway.analytics.calibrate`` and ``calibration_stats`` (standard library +
httpx): the same points, operating-point choice and price derivation as the CLI, without
storing. Prints the table and writes the JSON record, which ``tollgate calibrate`` would have
stored.

    python3 bench/gpu_calibrate.py --api-base http://127.0.0.1:8000/v1 --model /tmp/olmoe \\
        --prompts .gpu/prompts.jsonl --gpu-hour-usd 3.50 --json-out calibration.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.analytics.calibrate import calibrate
from gateway.analytics.calibration_stats import Point, table
from gateway.analytics.prompt_mix import read_mix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--model", required=True, help="the name the server serves")
    parser.add_argument("--backend", default="gpu-moe")
    parser.add_argument("--engine", default="openai")
    parser.add_argument("--prompts", type=Path, required=True)
    parser.add_argument("--gpu-hour-usd", type=float, required=True)
    parser.add_argument("--gpus", type=int, default=1)
    parser.add_argument("--slo-p95-ms", type=float, default=20_000.0)
    parser.add_argument("--max-concurrency", type=int, default=64)
    parser.add_argument("--requests-per-worker", type=int, default=3)
    parser.add_argument("--max-seconds-per-point", type=float, default=60.0)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    def progress(p: Point) -> None:
        print(
            f"concurrency {p.concurrency:>4}: {p.output_tokens_per_second:8.1f} out tok/s "
            f"{p.input_tokens_per_second:8.1f} in tok/s  p95 {p.latency_p95_ms or 0:7.0f} ms  "
            f"errors {p.errors}{'  ' + str(p.first_error) if p.first_error else ''}",
            flush=True,
        )

    result = asyncio.run(
        calibrate(
            api_base=args.api_base,
            model=args.model,
            backend=args.backend,
            engine=args.engine,
            gpu_hour_usd=args.gpu_hour_usd,
            gpus=args.gpus,
            mix=read_mix(args.prompts),
            mix_name=args.prompts.name,
            slo_p95_ms=args.slo_p95_ms,
            max_concurrency=args.max_concurrency,
            requests_per_worker=args.requests_per_worker,
            max_seconds_per_point=args.max_seconds_per_point,
            progress=progress,
        )
    )
    print(table(result))
    record = result.to_dict()
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(record, indent=1))
    print(json.dumps({k: v for k, v in record.items() if k != "points"}))


if __name__ == "__main__":
    main()
