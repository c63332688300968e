#!/bin/sh
# Tools the test suite drives that PyPI cannot provide: a headless browser (for the
# dashboard page tests), wrk, and PostgreSQL's server binaries (the PostgreSQL half of the
# store and server tests starts a throwaway cluster of its own: tests/pg.py). Installed
# from Debian when we are root and they are missing; otherwise the tests that need them
# skip with a message saying so.
need_chromium=
need_postgres=
command -v chromium >/dev/null 2>&1 || need_chromium=1
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_postgres=1
if [ -z "$need_chromium$need_postgres" ]; then exit 0; fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    [ -n "$need_postgres" ] && echo "note: PostgreSQL's server binaries are missing (apt-get install postgresql); the PostgreSQL tests will be skipped"
    exit 0
fi
apt-get update -qq >/dev/null 2>&1
if [ -n "$need_chromium" ]; then
    echo "installing chromium for the browser tests (apt-get)..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
        || echo "warning: could not install chromium; browser tests will be skipped"
fi
if [ -n "$need_postgres" ]; then
    echo "installing postgresql for the PostgreSQL tests (apt-get)..."
    # The tests run a cluster of their own: no 'main' cluster on port 5432 for them.
    mkdir -p /etc/postgresql-common
    [ -e /etc/postgresql-common/createcluster.conf ] \
        || echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Options::=--force-confold \
        postgresql >/dev/null 2>&1 \
        || echo "warning: could not install postgresql; the PostgreSQL tests will be skipped"
fi
exit 0
