#!/usr/bin/env bash
# Regenerates ctrltrace/envtest/gomod-jaeger/go.mod: the Go module of tool requirements from
# which the all-in-one `jaeger` binary (cmd/jaeger, Jaeger v2) is built for the tests.
#
# `go install github.com/jaegertracing/jaeger/cmd/jaeger@VERSION` is refused because Jaeger's
# go.mod has replace directives, and Go ignores a dependency's replaces. So each replace that
# pins a published module version is copied here, read from Jaeger's own go.mod rather than
# typed by hand (for v1.76.0: github.com/Shopify/sarama => v1.33.0). Replaces pointing at local
# paths cannot apply outside Jaeger's repository and are reported, not copied.
#
# Usage: scripts/gen-jaeger-gomod.sh [JAEGER_VERSION]   (default v1.76.0)
set -euo pipefail

jaeger_version=${1:-v1.76.0}
here=$(cd "$(dirname "$0")/.." && pwd)
module_dir="$here/ctrltrace/envtest/gomod-jaeger"

jaeger_gomod=$(go mod download -json "github.com/jaegertracing/jaeger@${jaeger_version}" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
# One "old=new@version" per module replace, one "skip old => path" per local-path replace.
replaces=$(go mod edit -json "$jaeger_gomod" | python3 -c '
import json, sys
for replace in json.load(sys.stdin).get("Replace") or []:
    old, new = replace["Old"], replace["New"]
    old_spec = old["Path"] + ("@" + old["Version"] if old.get("Version") else "")
    if new.get("Version"):
        print(old_spec + "=" + new["Path"] + "@" + new["Version"])
    else:
        print("skip " + old_spec + " => " + new["Path"])
')

mkdir -p "$module_dir"
cd "$module_dir"
rm -f go.mod go.sum
go mod init ctrltrace.invalid/jaeger >/dev/null 2>&1
go mod edit -go=1.25
copied=0
while IFS= read -r replace; do
  case "$replace" in
    "") ;;
    skip\ *) echo "not copied (local path): ${replace#skip }" >&2 ;;
    *)
      go mod edit -replace="$replace"
      copied=$((copied + 1))
      ;;
  esac
done <<<"$replaces"
go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@${jaeger_version}"
go mod tidy
echo "jaeger ${jaeger_version}: ${copied} replaces copied into ${module_dir}/go.mod"
