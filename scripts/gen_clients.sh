#!/usr/bin/env bash
# Regenerates the client SDK stubs from protos/ (run by `make proto`):
#   TypeScript (ts-proto, grpc-js services) -> clients/typescript/src/gen/
#   Go (protoc-gen-go + protoc-gen-go-grpc)  -> clients/go/gen/
#
# Usage: scripts/gen_clients.sh [--check]
#   --check  generate into a temporary folder and exit 1, listing the files, when the committed code differs
#            (missing, stale or orphaned). A language whose tools are missing is skipped with a message naming
#            them; the other language is still checked.
#
# Needs only the repository's tools: protoc with the well-known types (Debian protobuf-compiler, /usr/include),
# tools/node_modules (ts-proto), and protoc-gen-go / protoc-gen-go-grpc on PATH (`make tools`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROTOS="$ROOT/protos"
TS_OUT_REL="clients/typescript/src/gen"
GO_OUT_REL="clients/go/gen"
GO_MODULE="github.com/likeness-ai/likeness/clients/go"
TS_PLUGIN="$ROOT/tools/node_modules/.bin/protoc-gen-ts_proto"

# ts-proto options, chosen for readable hand-written code on top:
#   oneof=unions-value   oneofs become `{ $case: "imageChunk", value: ImageChunk }`, checked by the compiler
#   forceLong=bigint     int64 fields (seeds, sequences, byte sizes) never lose precision or throw
#   useOptionals=messages  message fields are optional keys, so requests are written as plain object literals
#   annotateFilesWithVersion=false  no protoc version in headers, so output does not depend on the protoc build
TS_OPTS="outputServices=grpc-js,esModuleInterop=true,env=node,useOptionals=messages,oneof=unions-value"
TS_OPTS+=",forceLong=bigint,annotateFilesWithVersion=false"

# Go import paths and package names for each proto file, passed on the command line so the protos stay
# language-neutral (no go_package option).
go_mappings() {
  local proto pkg_dir service version
  for proto in "${SOURCES[@]}"; do
    pkg_dir="$(dirname "$proto")"                 # likeness/trainer/v1
    service="$(basename "$(dirname "$pkg_dir")")" # trainer
    version="$(basename "$pkg_dir")"              # v1
    printf 'M%s=%s/gen/%s;%s%s\n' "$proto" "$GO_MODULE" "$pkg_dir" "$service" "$version"
  done
}

mapfile -t SOURCES < <(cd "$PROTOS" && find likeness -name '*.proto' | LC_ALL=C sort)
if [ ${#SOURCES[@]} -eq 0 ]; then
  echo "gen_clients: no .proto files under $PROTOS" >&2
  exit 1
fi

# Finds the well-known types (google/protobuf/timestamp.proto); Debian's protobuf-compiler puts them in /usr/include.
well_known_include() {
  local dir
  for dir in /usr/include /usr/local/include "$(dirname "$(command -v protoc)")/../include"; do
    if [ -f "$dir/google/protobuf/timestamp.proto" ]; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}

# Prints the reason the TypeScript generator cannot run, or nothing when it can.
ts_missing() {
  command -v protoc >/dev/null 2>&1 || { echo "protoc not found (install protobuf-compiler: make tools)"; return; }
  well_known_include >/dev/null || { echo "well-known .proto files not found (install protobuf-compiler)"; return; }
  [ -x "$TS_PLUGIN" ] || { echo "ts-proto not found at tools/node_modules (run: make tools)"; return; }
  command -v node >/dev/null 2>&1 || echo "node not found (install Node.js 18+)"
}

go_missing() {
  command -v protoc >/dev/null 2>&1 || { echo "protoc not found (install protobuf-compiler: make tools)"; return; }
  well_known_include >/dev/null || { echo "well-known .proto files not found (install protobuf-compiler)"; return; }
  command -v protoc-gen-go >/dev/null 2>&1 || { echo "protoc-gen-go not found (make tools)"; return; }
  command -v protoc-gen-go-grpc >/dev/null 2>&1 || echo "protoc-gen-go-grpc not found (make tools)"
}

generate_ts() {
  local out="$1"
  mkdir -p "$out"
  (cd "$PROTOS" && protoc -I . -I "$(well_known_include)" \
    --plugin="protoc-gen-ts_proto=$TS_PLUGIN" \
    --ts_proto_out="$out" --ts_proto_opt="$TS_OPTS" \
    "${SOURCES[@]}")
}

generate_go() {
  local out="$1" mapping go_opts=() grpc_opts=()
  mkdir -p "$out"
  while IFS= read -r mapping; do
    go_opts+=("--go_opt=$mapping")
    grpc_opts+=("--go-grpc_opt=$mapping")
  done < <(go_mappings)
  # module=... strips the module prefix, so <out> stands for clients/go and files land in <out>/gen/likeness/...
  (cd "$PROTOS" && protoc -I . -I "$(well_known_include)" \
    --go_out="$out" --go_opt="module=$GO_MODULE" "${go_opts[@]}" \
    --go-grpc_out="$out" --go-grpc_opt="module=$GO_MODULE" "${grpc_opts[@]}" \
    "${SOURCES[@]}")
}

# Lists generated files under a folder, relative to it, one per line, sorted.
list_files() {
  (cd "$1" 2>/dev/null && find . -type f \( -name '*.ts' -o -name '*.go' \) | sed 's|^\./||' | LC_ALL=C sort)
}

# Compares files ignoring the generator's version-annotation lines (`// 	protoc        v3.21.12`), so a
# different patch release of protoc does not count as a change.
same_generated() {
  local pattern='^//[[:space:]]+(protoc|protoc-gen-go|protoc-gen-go-grpc)[[:space:]]+(v[0-9]|\(unknown\))'
  cmp -s <(grep -Ev "$pattern" "$1") <(grep -Ev "$pattern" "$2")
}

# check_tree LANG FRESH_DIR COMMITTED_DIR: prints "  path (why)" for each difference; returns 1 on any.
check_tree() {
  local lang="$1" fresh="$2" committed="$3" status=0 rel
  while IFS= read -r rel; do
    [ -n "$rel" ] || continue
    if [ ! -f "$committed/$rel" ]; then
      echo "  ${committed#"$ROOT"/}/$rel (missing)"
      status=1
    elif ! same_generated "$fresh/$rel" "$committed/$rel"; then
      echo "  ${committed#"$ROOT"/}/$rel (out of date)"
      status=1
    fi
  done < <(list_files "$fresh")
  while IFS= read -r rel; do
    [ -n "$rel" ] || continue
    if [ ! -f "$fresh/$rel" ]; then
      echo "  ${committed#"$ROOT"/}/$rel (no longer generated)"
      status=1
    fi
  done < <(list_files "$committed")
  [ $status -eq 0 ] && echo "gen_clients: $lang client code is up to date" >&2
  return $status
}

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  -h | --help)
    sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac

if [ $check -eq 0 ]; then
  for lang in ts:TypeScript go:Go; do
    reason="$("${lang%%:*}_missing")"
    if [ -n "$reason" ]; then
      echo "gen_clients: cannot generate the ${lang#*:} client: $reason" >&2
      exit 1
    fi
  done
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  # Generate into a scratch folder first, then replace the committed trees, so stale files of deleted protos go.
  generate_ts "$tmp/ts"
  generate_go "$tmp/go"
  rm -rf "${ROOT:?}/$TS_OUT_REL" "${ROOT:?}/$GO_OUT_REL"
  mkdir -p "$(dirname "$ROOT/$TS_OUT_REL")" "$(dirname "$ROOT/$GO_OUT_REL")"
  cp -R "$tmp/ts" "$ROOT/$TS_OUT_REL"
  cp -R "$tmp/go/gen" "$ROOT/$GO_OUT_REL"
  list_files "$ROOT/$TS_OUT_REL" | sed "s|^|generated $TS_OUT_REL/|"
  list_files "$ROOT/$GO_OUT_REL" | sed "s|^|generated $GO_OUT_REL/|"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
failed=0
report=""
reason="$(ts_missing)"
if [ -n "$reason" ]; then
  echo "gen_clients: SKIPPING the TypeScript check: $reason" >&2
else
  generate_ts "$tmp/ts"
  report+="$(check_tree TypeScript "$tmp/ts" "$ROOT/$TS_OUT_REL")" || failed=1
fi
reason="$(go_missing)"
if [ -n "$reason" ]; then
  echo "gen_clients: SKIPPING the Go check: $reason" >&2
else
  generate_go "$tmp/go"
  diff_lines="$(check_tree Go "$tmp/go/gen" "$ROOT/$GO_OUT_REL")" || failed=1
  report+="${report:+$'\n'}$diff_lines"
fi
if [ $failed -ne 0 ]; then
  echo "gen_clients: generated client code is out of date; run \`make proto\` and commit:" >&2
  echo "$report" | sed '/^$/d' >&2
  exit 1
fi
exit 0
