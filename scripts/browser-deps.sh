#!/usr/bin/env bash
# Test-only system packages. Run by scripts/test.sh, never by the demo: installing a browser
# is not something a user asked for by running simsearch.
set -euo pipefail
# The web page's test (tests/test_browser.py) drives Debian's chromium through chromedriver; no
# browser is ever downloaded. Installed only as root, and only when missing.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
    && { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; }; then
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }; then
    echo "bootstrap: could not install chromium; tests/test_browser.py will be skipped" >&2
  fi
fi
