#!/usr/bin/env bash
# The lab's single entry point. On first use it creates a virtual environment in .venv and installs the
# project into it (editable, with the test extras and the [stacks] extra: PyTorch, ONNX and ONNX Runtime for
# e15 and e14's ONNX row, so `run` and `test` both have them); afterwards it reuses it, reinstalling only when
# setup.cfg or pyproject.toml change. Then it runs the `lab` command line with the arguments given:
#   ./lab.sh run all     train every experiment at the default `cpu` preset and write results/REPORT.md
#   ./lab.sh test        ruff check + the whole pytest suite (as root on Debian/Ubuntu it first installs
#                        the chromium package for the browser test, once; LAB_NO_BROWSER=1 skips that)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${LAB_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

if ! command -v "$python" >/dev/null 2>&1; then
  echo "lab: $python not found; install Python 3.10 or newer (or set PYTHON=/path/to/python3)" >&2
  exit 2
fi
if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
  echo "lab: $("$python" --version 2>&1) is too old; Python 3.10 or newer is required (set PYTHON=...)" >&2
  exit 2
fi

stamp="$venv/.lab-install-stamp"
want="$(cat "$root/setup.cfg" "$root/pyproject.toml" | cksum)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "lab: setting up $venv (first use or changed dependencies) ..." >&2
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  log="$venv/install.log"
  if ! { "$venv/bin/python" -m pip install --disable-pip-version-check --upgrade pip &&
         "$venv/bin/python" -m pip install --disable-pip-version-check -e "$root[test,stacks]"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "lab: installing into $venv failed (full log: $log)" >&2
    exit 2
  fi
  echo "$want" >"$stamp"
fi
# The dashboard's browser test drives a real Chromium. Playwright is a Python test dependency, but its own
# browser download needs the internet, so the test uses the system's Chromium: on Debian/Ubuntu as root
# (CI), `./lab.sh test` installs the distribution's package once, saying so first; LAB_NO_BROWSER=1 skips
# the install (and the browser test, which then says why); elsewhere install it yourself or set LAB_CHROMIUM.
if [ "${1:-}" = "test" ] && [ -z "${LAB_NO_BROWSER:-}" ] && [ -z "${LAB_CHROMIUM:-}" ] &&
   ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 &&
   [ ! -e "$venv/.chromium-tried" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "lab: installing Debian's chromium package system-wide (apt-get; ~300 MB with its libraries; once)" \
       "for the dashboard's browser test; LAB_NO_BROWSER=1 ./lab.sh test skips it" >&2
  touch "$venv/.chromium-tried"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
       >"$venv/chromium-install.log" 2>&1; then
    echo "lab: installing chromium failed (log: $venv/chromium-install.log); the browser test will skip" >&2
  fi
fi
cd "$root"
exec "$venv/bin/python" -m lab.cli "$@"
