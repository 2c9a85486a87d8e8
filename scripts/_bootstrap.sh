# Sourced by scripts/test and scripts/demo: installs what they need, idempotently.
#   - a virtualenv in .venv with ctrltrace installed (editable) and the extras named in $1;
#   - the control-plane binaries (found, or built once with Go into the user cache);
#   - Prometheus and promtool (Debian's prometheus package, installed with apt when missing);
#   - the Jaeger binary (found, or built once with Go into the user cache).
# Everything expensive (pip's wheel cache, Go's module and build caches, the built binaries)
# lives outside the checkout, so a fresh clone on a warm machine is ready in seconds.
set -euo pipefail

extras=${1:-test}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "ctrltrace needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 4
fi
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
install() {
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" \
    > .venv/pip.log 2>&1 || { cat .venv/pip.log >&2; echo "pip install failed" >&2; exit 4; }
}
install --upgrade pip
install -e ".[${extras}]"
export PATH="$root/.venv/bin:$PATH"

# Builds kube-apiserver and etcd on the first run only (minutes); later runs find the cache.
ctrltrace envtest --binaries

# Tests start their own Prometheus on a free port; the package's service is never used. When
# missing, install it as root (sudo if we are not and it exists) with services kept from
# starting by a policy-rc.d answering 101 — Debian's switch for that — so nothing of ours takes
# port 9090. Skipped entirely when both binaries are present, so warm runs make no apt call.
install_prometheus() (
  as_root=()
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "prometheus/promtool missing and not root (no sudo): run as root:" \
        "apt-get install --no-install-recommends prometheus" >&2
      exit 4
    fi
    as_root=(sudo)
  fi
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    trap '"${as_root[@]}" rm -f "$policy"' EXIT
    printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
    "${as_root[@]}" chmod 755 "$policy"
  fi
  echo "installing Debian's prometheus package (prometheus, promtool) with apt-get"
  if ! { "${as_root[@]}" apt-get update &&
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y --no-install-recommends prometheus; } >.venv/apt.log 2>&1; then
    tail -n 20 .venv/apt.log >&2
    echo "apt-get install prometheus failed (full log: .venv/apt.log)" >&2
    exit 4
  fi
)
if [ ! -x /usr/bin/prometheus ] || [ ! -x /usr/bin/promtool ]; then
  install_prometheus
fi

# Builds Jaeger on the first run only (minutes); later runs find the cache.
python -m ctrltrace.envtest.observability --build
