# Sourced by scripts/test and scripts/demo: installs what they need, idempotently.
#   - a virtualenv in .venv with ctrltrace installed (editable) and the extras named in $1;
#   - the control-plane binaries (found, or built once with Go into the user cache).
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
