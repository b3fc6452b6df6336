#!/usr/bin/env bash
# Kept for `npm run generate` in clients/typescript: all code (Python, TypeScript, Go) now comes from one
# `buf generate` with buf.gen.yaml, driven by scripts/gen_protos.py. Same flags: [--check].
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "${LIKENESS_PYTHON:-$ROOT/.venv/bin/python}" "$ROOT/scripts/gen_protos.py" "$@"
