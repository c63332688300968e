#!/bin/sh
# Tools the test suite drives that PyPI cannot provide: a headless browser (for the
# dashboard page tests) and wrk. Installed from Debian when we are root and they are
# missing; otherwise the tests that need them skip with a message saying so.
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium for the browser tests (apt-get)..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 \
        || echo "warning: could not install chromium; browser tests will be skipped"
fi
exit 0
