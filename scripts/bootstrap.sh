#!/usr/bin/env bash
# Create .venv and install simsearch with its test and demo extras. Idempotent; no prompts.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
if [ ! -x "$root/.venv/bin/python" ]; then
  "$python" -m venv "$root/.venv"
fi
stamp="$root/.venv/.simsearch-installed"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  "$root/.venv/bin/python" -m pip install --quiet --upgrade pip
  "$root/.venv/bin/python" -m pip install --quiet -e "$root[dev]"
  touch "$stamp"
fi
# The web page's test (tests/test_browser.py) drives Debian's chromium through chromedriver; no
# browser is ever downloaded. Installed only as root, and only when missing.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
    && { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; }; then
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }; then
    echo "bootstrap: could not install chromium; tests/test_browser.py will be skipped" >&2
  fi
fi
