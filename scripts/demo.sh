#!/bin/sh
# A short demo: wrap a few real commands, then show history, stats and the dashboard.
set -e
BIN="$1"
CW="$BIN/cronwatch"
echo "== database: $CRONWATCH_DB"
"$CW" run demo-backup -- sh -c 'echo "backing up 3 files"; sleep 0.2; echo done'
"$CW" run demo-backup -- sh -c 'echo "disk full" >&2; exit 1' || echo "(exit code $? passed through)"
"$CW" run demo-backup -- sh -c 'echo "backing up 3 files"; sleep 0.1; echo done'
"$BIN/job-watch" --name demo-report python3 -c 'print("report: 42 rows")'
"$CW" run demo-slow --timeout 1s -- sleep 5 || echo "(timed out: exit code $?)"
echo
echo "== cronwatch history demo-backup"
"$CW" history demo-backup
echo
echo "== cronwatch stats demo-backup"
"$CW" stats demo-backup
echo
echo "== cronwatch jobs"
"$CW" jobs
echo
echo "== dashboard: $(dirname "$CRONWATCH_DB")/dashboard.html (open it in a browser)"
