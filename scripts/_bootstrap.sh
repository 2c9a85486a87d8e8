# Sourced by scripts/test and scripts/demo: installs what they need, idempotently.
#   - a C compiler when it can (Debian's gcc, installed with apt when there is no `cc`) for
#     ctrltrace's optional C accelerators; without one they are skipped (pure-Python paths);
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
# Debian packages, when missing: installed as root (sudo if we are not and it exists) with
# services kept from starting by a policy-rc.d answering 101 — Debian's switch for that — so
# nothing of ours (the prometheus package's service, say) takes a port. Callers check first,
# so warm runs make no apt call.
apt_install() (
  as_root=()
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "$* missing and not root (no sudo): run as root:" \
        "apt-get install --no-install-recommends $*" >&2
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
  echo "installing Debian's $* with apt-get"
  mkdir -p .venv
  if ! { "${as_root[@]}" apt-get update &&
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y --no-install-recommends "$@"; } >.venv/apt.log 2>&1; then
    tail -n 20 .venv/apt.log >&2
    echo "apt-get install $* failed (full log: .venv/apt.log)" >&2
    exit 4
  fi
)

# ctrltrace's C accelerators are compiled when pip installs it, if a compiler and Python's
# headers are there; without them pip skips them and ctrltrace uses the pure-Python paths,
# which write the same bytes more slowly. The unit tests compare the two, so they need both.
if ! command -v cc >/dev/null 2>&1; then
  apt_install gcc libc6-dev ||
    echo "no C compiler: ctrltrace's C accelerators will not be built" \
      "(the byte-for-byte unit tests need them)" >&2
fi
if ! "$python" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
  echo "$python has no C headers (Python.h): ctrltrace's C accelerators will not be built" \
    "(install its development package, Debian: python3-dev, to build them)" >&2
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

# Tests start their own Prometheus on a free port; the package's service is never used.
if [ ! -x /usr/bin/prometheus ] || [ ! -x /usr/bin/promtool ]; then
  apt_install prometheus
fi

# Builds Jaeger on the first run only (minutes); later runs find the cache.
python -m ctrltrace.envtest.observability --build
