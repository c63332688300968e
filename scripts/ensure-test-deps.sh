#!/bin/sh
# Tools the test suite drives that PyPI cannot provide: a headless browser (for the
# dashboard page tests), wrk, PostgreSQL's server binaries (the PostgreSQL half of the
# store and server tests starts a throwaway cluster of its own: tests/pg.py), and nginx
# and HAProxy (docs/deployment.md's load balancer configurations, run in front of two
# replicas: tests/test_server_replicas.py). Installed from Debian when we are root and
# they are missing; otherwise the tests that need them skip with a message saying so.
need_chromium=
need_postgres=
need_balancers=
command -v chromium >/dev/null 2>&1 || need_chromium=1
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_postgres=1
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || need_balancers=1
[ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null 2>&1 || need_balancers=1
if [ -z "$need_chromium$need_postgres$need_balancers" ]; then exit 0; fi
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
if [ -n "$need_balancers" ]; then
    echo "installing nginx and haproxy for the load balancer tests (apt-get)..."
    # The tests start them with configurations of their own: no service is started at
    # install (policy-rc.d's 101: "action forbidden") unless the machine has a policy.
    made_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Options::=--force-confold \
        nginx-light haproxy >/dev/null 2>&1 \
        || echo "warning: could not install nginx and haproxy; the load balancer tests will be skipped"
    [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
fi
exit 0
