#!/usr/bin/env bash
# Regenerates the Python stubs (messages, .pyi, gRPC stubs) from protos/ into sdks/python/.
# Usage: scripts/gen_python.sh [OUT_DIR]   (default: sdks/python)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-sdks/python}"
py="${PYTHON:-.venv/bin/python}"
bindir="$(dirname "$py")"
rm -rf "$out/groundwire/v1"
mkdir -p "$out"
"$py" -m grpc_tools.protoc \
  -I protos \
  --python_out="$out" \
  --plugin=protoc-gen-mypy="$bindir/protoc-gen-mypy" \
  --mypy_out="$out" \
  --grpc_python_out="$out" \
  --plugin=protoc-gen-mypy_grpc="$bindir/protoc-gen-mypy_grpc" \
  --mypy_grpc_out="$out" \
  protos/groundwire/v1/*.proto 2> >(grep -v '^Writing mypy to' >&2)
touch "$out/groundwire/v1/py.typed"
