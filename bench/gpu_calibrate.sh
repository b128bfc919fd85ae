#!/usr/bin/env bash
# The GPU calibration, run on the device machine from the repository root (see docs/self-hosted.md):
# a random-weight OLMoE-1B-7B-shaped MoE (bf16) served by `transformers serve --continuous-batching`
# through bench/gpu_serve.py (cuDNN attention off), calibrated by bench/gpu_calibrate.py exactly as
# `tollgate calibrate` does. Needs, carried: .whl/ (the serving wheels the image lacks) and .gpu/
# (tokenizer + prompt mix from bench/gpu_prepare.py). Results go to $OUT (or ./gpu-out).
#   GPU_HOUR_USD=3.50 SLO_MS=30000 MAX_CONC=128 bash bench/gpu_calibrate.sh
set -uo pipefail
OUT="${OUT:-gpu-out}"; mkdir -p "$OUT"
GPU_HOUR_USD="${GPU_HOUR_USD:-3.50}"
SLO_MS="${SLO_MS:-30000}"
MAX_CONC="${MAX_CONC:-128}"
POINT_S="${POINT_S:-35}"
PORT=8000
MODEL="${MODEL:-/tmp/olmoe-1b-7b}"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' | tee -a "$OUT/gpu.txt"
python3 -m transformers.cli.transformers serve --help > "$OUT/serve_help.txt" 2>&1 \
  || transformers serve --help > "$OUT/serve_help.txt" 2>&1
if grep -q -- "--force-model" "$OUT/serve_help.txt"; then force=(--force-model "$MODEL")
elif grep -q "FORCE_MODEL" "$OUT/serve_help.txt"; then force=("$MODEL")
else force=(); fi

stamp "building the model"
python3 bench/gpu_serve.py --model-dir "$MODEL" --tokenizer .gpu/tokenizer --build-only 2>&1 | grep -v Writing | tail -3
stamp "starting transformers serve"
python3 bench/gpu_serve.py --model-dir "$MODEL" --tokenizer .gpu/tokenizer \
  --continuous-batching --host 127.0.0.1 --port $PORT "${force[@]}" > "$OUT/serve.log" 2>&1 &
server=$!
ready=0
deadline=$(( $(date +%s) + 300 ))
while [ "$(date +%s)" -lt $deadline ]; do
  if curl -sf -m 30 "http://127.0.0.1:$PORT/v1/chat/completions" -H 'content-type: application/json' \
       -d "{\"model\":\"$MODEL\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":4}" > "$OUT/first.json"; then
    ready=1; break; fi
  kill -0 $server 2>/dev/null || break
  sleep 2
done
[ $ready = 1 ] || { stamp "server not ready"; tail -40 "$OUT/serve.log"; exit 1; }
stamp "serving: $(head -c 300 "$OUT/first.json")"

python3 bench/gpu_calibrate.py --api-base "http://127.0.0.1:$PORT/v1" --model "$MODEL" \
  --backend olmoe-h200 --engine openai --prompts .gpu/prompts.jsonl --gpu-hour-usd "$GPU_HOUR_USD" \
  --slo-p95-ms "$SLO_MS" --max-concurrency "$MAX_CONC" --max-seconds-per-point "$POINT_S" \
  --json-out "$OUT/calibration.json" 2>&1 | tee "$OUT/calibration.txt"
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv | tee -a "$OUT/gpu.txt"
stamp "done"
kill $server
