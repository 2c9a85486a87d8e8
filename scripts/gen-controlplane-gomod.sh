#!/usr/bin/env bash
# Regenerates ctrltrace/envtest/gomod/go.mod: the Go module of tool requirements from which
# kube-apiserver and etcd are built.
#
# Kubernetes' go.mod requires each staging module at v0.0.0 and replaces it with a ./staging
# path, which Go ignores when k8s.io/kubernetes is a dependency. So every staging module is
# replaced here with its published v0.<minor>.<patch> tag, read from Kubernetes' own go.mod
# rather than typed by hand; the etcd server version is read from the same file.
#
# Usage: scripts/gen-controlplane-gomod.sh [KUBERNETES_VERSION]   (default v1.36.3)
set -euo pipefail

k8s_version=${1:-v1.36.3}
staging_version="v0.${k8s_version#v1.}"
here=$(cd "$(dirname "$0")/.." && pwd)
module_dir="$here/ctrltrace/envtest/gomod"

k8s_gomod=$(go mod download -json "k8s.io/kubernetes@${k8s_version}" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2; exit}' "$k8s_gomod")
staging_modules=$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$k8s_gomod")

cd "$module_dir"
rm -f go.mod go.sum
go mod init ctrltrace.invalid/controlplane >/dev/null 2>&1
go mod edit -go=1.25
for module in $staging_modules; do
  go mod edit -replace="${module}=${module}@${staging_version}"
done
go get -tool "k8s.io/kubernetes/cmd/kube-apiserver@${k8s_version}"
go get -tool "go.etcd.io/etcd/server/v3@${etcd_version}"
go mod tidy
echo "kubernetes ${k8s_version} (staging ${staging_version}), etcd ${etcd_version}:" \
  "$(echo "$staging_modules" | wc -l) staging replaces written to ${module_dir}/go.mod"
