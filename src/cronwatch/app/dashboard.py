"""The HTML dashboard: one self-contained page (inline CSS, JS and SVG, no external assets).

The same renderer serves the static file written after every wrapped run and the live
server (``live=True``). Job output, names, commands and messages are untrusted text: every
such value goes through ``_e`` (html.escape, quote=True), and no job text ever reaches the
script block. A strict Content-Security-Policy backs that up.

Speed: the page is regenerated after every wrapped run, but usually only one job changed.
Each job's costly parts (stats, charts, runs with output, health) sit in the page between
``<!--cw:KEY:kind-->`` markers, KEY hashing what they were computed from (the newest run,
the open runs, an hourly bucket); the next render reuses every fragment whose KEY still
matches. Escaping makes the markers unforgeable: job text never contains a raw ``<``.
"""

from __future__ import annotations

import contextlib
import html
import os
import re
import time
import zlib
from typing import TYPE_CHECKING, Any

from cronwatch._version import __version__
from cronwatch.app.evaluate import describe
from cronwatch.core.errors import ValidationError
from cronwatch.core.model import Run
from cronwatch.core.text import exit_text, first_line, percent, streams
from cronwatch.core.values import format_duration

if TYPE_CHECKING:
    from cronwatch.core.model import Job
    from cronwatch.store.interface import Store

DOT_RUNS = 30  # coloured dots in the overview: a flapping job shows alternating colours
LIST_RUNS = 20  # runs listed per job
OUTPUT_RUNS = 10  # newest runs per job whose output is embedded (bounds decompression)
CHART_RUNS = 100  # bars in the duration chart: a slowing job shows as a rising slope
MINI_RUNS = 50  # bars in the overview's small chart
TAIL_BYTES = 16 * 1024  # the tail of each stream that is shown
JOB_OUTPUT_BUDGET = 48 * 1024  # embedded output per job, so 100 jobs stay a few MB
WEEK = 7 * 86400
_REVISION = f"{__version__}/1"  # bump when the fragment markup changes

_CLASS = {"success": "s", "failed": "f", "timeout": "t", "missed": "m", "running": "r"}
_PILL = {
    "healthy": "ok", "success": "ok", "failing": "bad", "failed": "bad", "missed": "bad",
    "timeout": "warn", "late": "warn", "running": "run", "paused": "muted", "unknown": "muted",
    "disabled": "muted",
}  # fmt: skip
# problems first; timeout is orange like its bars but counts as failing (Status.is_failure)
_RANK = {"failing": 0, "failed": 0, "missed": 0, "timeout": 0, "late": 1, "running": 2,
         "unknown": 3, "paused": 3, "disabled": 3, "healthy": 4, "success": 4}  # fmt: skip
_MARK = re.compile(r"([0-9a-f]{16}:(?:row|sec|hl))(?::(\d*:[a-z]+))?")


def _e(value: object) -> str:
    """Escape for text and attributes. Non-ASCII becomes character references: an ASCII
    page is several times cheaper to write, read back and search, and a lone surrogate
    (from undecodable bytes) cannot make the write fail."""
    text = html.escape(str(value), quote=True)
    return text if text.isascii() else text.encode("ascii", "xmlcharrefreplace").decode()


def _digest(*parts: str) -> str:
    data = "\0".join(parts).encode()
    return f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"  # zlib is loaded; hashlib costs 4 ms


def _hour(name: str, now: float) -> int:
    """An hourly bucket, offset per job so that jobs do not all expire in the same render."""
    return int((now + zlib.crc32(name.encode()) % 3600) // 3600)


def _fingerprint(name: str, last: Run | None, open_ids: list[str], now: float) -> str:
    """Changes when the job's newest run or its set of open runs changes (an older concurrent
    run finishing), and once an hour, staggered per job: the 7-day window moves, and the
    rare change these miss (an overlapping older run recorded late, an import) shows then,
    without one render having to redo every job."""
    parts = [_REVISION, name, str(_hour(name, now)), *sorted(open_ids)]
    if last is not None:
        parts += [last.id, last.status.value, repr(last.ended_at), repr(last.duration)]
    return _digest(*parts)


# --- small pieces ---------------------------------------------------------------------


def _ago(ts: float, now: float) -> str:
    delta = now - ts
    text = f"in {format_duration(-delta)}" if delta < 0 else f"{format_duration(delta)} ago"
    return f'<span class=ago data-t="{ts:.3f}">{text}</span>'


def _time(ts: float | None) -> str:
    """UTC text; the page script rewrites it to the reader's zone (UTC stays on hover)."""
    if ts is None:
        return "-"
    return (
        f'<time data-t="{ts:.3f}">{time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))} UTC</time>'
    )


def _pill(word: str, reason: str = "") -> str:
    tip = f' title="{_e(reason)}"' if reason else ""
    return f'<span class="pill {_PILL.get(word, "muted")}"{tip}>{_e(word)}</span>'


def _dots(runs: list[Run]) -> str:
    dots = "".join(f"<i class={_CLASS[r.status.value]}></i>" for r in reversed(runs[:DOT_RUNS]))
    return f'<span class=dots title="last {DOT_RUNS} runs, newest right">{dots}</span>'


def _chart(durations: list[tuple[float, str]], n: int, *, cls: str) -> str:
    """Bars, oldest left, newest right, in fixed slots so charts line up across jobs.

    One <path> per outcome rather than a <rect> per bar: a quarter of the bytes, and the
    page carries 150 bars a job."""
    items = list(reversed(durations[:n]))
    if not items:
        return f"<svg class={cls}></svg>"
    top = max(d for d, _ in items) or 1.0
    x0 = n - len(items)
    paths: dict[str, list[str]] = {}
    for i, (d, status) in enumerate(items):
        h = max(0.5, d / top * 40)
        paths.setdefault(_CLASS.get(status, "m"), []).append(f"M{(x0 + i) * 6} 40v-{h:.1f}h5V40z")
    body = "".join(f'<path class={c} d="{"".join(p)}"/>' for c, p in paths.items())
    return (
        f'<svg class={cls} viewBox="0 0 {n * 6} 40" preserveAspectRatio="none" role=img '
        f'aria-label="durations of the last {len(items)} runs">{body}</svg>'
    )


def _stream(label: str, data: bytes | None, run_id: str) -> str:
    if data is None:
        return f"<p class=note>{label}: not captured or expired</p>"
    if not data:
        return f"<p class=note>{label}: empty</p>"
    note = f"{label} ({len(data):,} bytes)"
    if len(data) > TAIL_BYTES:
        note = (f"{label}: only the last {TAIL_BYTES // 1024} KiB of {len(data):,} bytes shown; "
                f"full output: <code>cronwatch show {_e(run_id)}</code>")  # fmt: skip
        data = data[-TAIL_BYTES:]
    return f"<p class=note>{note}</p><pre>{_e(data.decode('utf-8', 'replace'))}</pre>"


def _run_item(run: Run, loaded: bool) -> str:
    status = run.status.value
    exit_ = exit_text(run)
    fields = [("run", run.id), ("command", run.command), ("host", run.host),
              ("user", run.user), ("env", run.env), ("message", run.message)]  # fmt: skip
    meta = "".join(f"<dt>{k}</dt><dd>{_e(v)}</dd>" for k, v in fields if v)
    meta += f"<dt>ended</dt><dd>{_time(run.ended_at)}</dd>"
    if loaded:
        body = "".join(_stream(label, data, run.id) for label, data in streams(run))
    elif run.status.is_finished:
        body = f"<p class=note>output not embedded in this page: <code>cronwatch show {_e(run.id)}</code></p>"
    else:
        body = "<p class=note>still running</p>"
    return (
        f'<details class=run id="run-{_e(run.id)}"><summary><i class={_CLASS[status]}></i>'
        f"{_time(run.started_at)}<span class=st>{status}</span>"
        f"<span class=num>{format_duration(run.duration)}</span>"
        f"<span class=num>{'' if exit_ in ('-', '0') else 'exit ' + exit_}</span>"
        f"<span class=msg>{_e(first_line(run, 100) if loaded else run.message[:100])}</span>"
        f"</summary><dl>{meta}</dl>{body}</details>"
    )


# --- one job ------------------------------------------------------------------------


def _load_outputs(store: Store, runs: list[Run]) -> set[str]:
    """Fetch output for the newest runs until the job's share of the page is spent."""
    loaded, budget = set(), JOB_OUTPUT_BUDGET
    for i, run in enumerate(runs[:OUTPUT_RUNS]):
        if budget <= 0:
            break
        if run.status.is_finished:
            runs[i] = run = store.get_run(run.id, output=True)
            loaded.add(run.id)
            budget -= sum(min(len(b or b""), TAIL_BYTES) for b in (run.stdout, run.stderr))
    return loaded


def _job_fragments(store: Store, name: str, now: float) -> tuple[str, str]:
    """(the overview row's cells after "last run", the section body): the costly parts."""
    runs = store.list_runs(job=name, limit=max(DOT_RUNS, LIST_RUNS))
    if not runs:
        return "<td></td><td></td><td></td><td></td><td></td>", "<p class=note>no runs yet</p>"
    s = store.job_stats(name, since=now - WEEK)
    durations = store.recent_durations(name, CHART_RUNS)
    p50, p95 = format_duration(s["duration_p50"]), format_duration(s["duration_p95"])
    row = (
        f"<td>{_dots(runs)}</td><td class=num>{percent(s['success_rate'])}</td>"
        f"<td class=num>{p50}</td><td class=num>{p95}</td>"
        f"<td>{_chart(durations, MINI_RUNS, cls='mini')}</td>"
    )
    facts = [
        f"last 7 days: {s['runs']} runs, {percent(s['success_rate'])} ok",
        f"p50 {p50} &middot; p95 {p95} &middot; max {format_duration(s['duration_max'])}",
    ]
    if s["streak"]["status"]:
        n, word = s["streak"]["count"], s["streak"]["status"]
        facts.append(f"{n} {word}{'' if n == 1 else 'es' if word == 'success' else 's'} in a row")
    top = max((d for d, _ in durations), default=None)
    caption = (
        f"duration of the last {len(durations)} finished runs, oldest left; top of the chart "
        f"{format_duration(top)}"
        if durations
        else "no finished run with a duration yet"
    )
    loaded = _load_outputs(store, runs)
    items = "".join(_run_item(r, r.id in loaded) for r in runs[:LIST_RUNS])
    section = (
        f"<p class=facts>{' &middot; '.join(facts)}</p>"
        f"<figure>{_chart(durations, CHART_RUNS, cls='big')}"
        f"<figcaption>{caption}</figcaption></figure><div class=runs>{items}</div>"
    )
    return row, section


class _Render:
    """One render: the store, the clock, and what the previous page lets us reuse."""

    def __init__(self, store: Store, now: float, previous: str) -> None:
        self.store, self.now, self.cache = store, now, _fragments(previous)
        self.describe = describe
        self.open_ids: dict[str, list[str]] = {}
        for run in store.open_runs():
            self.open_ids.setdefault(run.job, []).append(run.id)

    def job(self, job: Job) -> tuple[int, str, str, str]:
        """(rank, name, overview row, section), reusing the fragments whose key matches."""
        last = self.store.last_run(job.name)
        key = _fingerprint(job.name, last, self.open_ids.get(job.name, []), self.now)
        state, marker, badges = self.health(job, last, key)
        hit_row, hit_sec = self.cache.get(f"{key}:row"), self.cache.get(f"{key}:sec")
        if hit_row and hit_sec:
            row, sec = hit_row[1], hit_sec[1]
        else:
            row, sec = _job_fragments(self.store, job.name, self.now)
        name = _e(job.name)
        ago = _ago(last.started_at, self.now) if last else "no runs yet"
        since = f"last run {_time(last.started_at)} ({ago})" if last else ""
        return (
            _RANK.get(state, 3),
            job.name,
            f'<tr><td>{marker}{badges}<!--/cw--></td><td><a href="#job-{name}">{name}</a></td>'
            f"<td>{ago}</td><!--cw:{key}:row-->{row}<!--/cw--></tr>",
            f'<section id="job-{name}"><h2>{badges} {name} <small>{since}</small></h2>'
            f"<!--cw:{key}:sec-->{sec}<!--/cw--></section>",
        )

    def health(self, job: Job, last: Run | None, key: str) -> tuple[str, str, str]:
        """(state word, cache marker, badges).

        describe_job costs about a millisecond a job: too much for 100 jobs on every run.
        Its answer changes with the runs (``key``), the settings, and the clock; the clock
        only once the next expected run is due or while a run is open (timeout). So the
        answer is reused until one of those changes."""
        hkey = _digest(key, repr(job))  # every setting; repr is 5x cheaper than settings()
        hit = self.cache.get(f"{hkey}:hl")
        if hit is not None:
            until, _, state = hit[0].partition(":")
            if not until or self.now < float(until):
                return state, f"<!--cw:{hkey}:hl:{hit[0]}-->", hit[1]
        state = "paused" if job.paused else last.status.value if last else "unknown"
        health: dict[str, Any] = {}
        if self.describe is not None:
            # a bad schedule (ValidationError) must not blank the page for every job
            with contextlib.suppress(ValidationError):
                health = self.describe(self.store, job.name, now=self.now)
        state = str(health.get("health") or state)
        state = state if state.isalpha() and state.islower() else "unknown"
        badges = _pill(state, str(health.get("health_reason") or health.get("reason") or ""))
        if health.get("slowdown"):
            badges += f' <span class="pill warn" title="{_e(health["slowdown"])}">slower</span>'
        due = health.get("next_expected")
        until = "0" if job.name in self.open_ids else "" if due is None else f"{float(due):.0f}"
        return state, f"<!--cw:{hkey}:hl:{until}:{state}-->", badges


def _fragments(page: str) -> dict[str, tuple[str, str]]:
    """A previous page's fragments: "KEY:kind" -> (the marker's extra field, the HTML).
    (str.find: a lazy regex over a few MB takes 100+ ms.)"""
    found, pos = {}, 0
    while (start := page.find("<!--cw:", pos)) >= 0:
        head_end = page.find("-->", start)
        end = page.find("<!--/cw-->", head_end)
        if head_end < 0 or end < 0:
            break
        m = _MARK.fullmatch(page, start + 7, head_end)
        if m:
            found[m[1]] = (m[2] or "", page[head_end + 3 : end])
        pos = end + 10
    return found


# --- the page -----------------------------------------------------------------------


def render_dashboard(
    store: Store, *, now: float, live: bool = False, previous: str | None = None
) -> str:
    """The whole page as one string.

    ``previous`` is the last page rendered (from disk or memory): fragments of jobs that
    have not changed are taken from it. ``live`` adds a periodic in-place refresh.
    """
    render = _Render(store, now, previous or "")
    jobs = sorted(render.job(j) for j in store.list_jobs())  # problems first, then by name
    bad, warn = sum(j[0] == 0 for j in jobs), sum(j[0] == 1 for j in jobs)
    title = f"cronwatch: {len(jobs)} jobs" + (f", {bad} failing" if bad else "")
    counts = f"{len(jobs)} jobs" + "".join(
        f" &middot; <span class='pill {c}'>{n} {w}</span>"
        for n, w, c in ((bad, "failing", "bad"), (warn, "late", "warn"))
        if n
    )
    if jobs:
        body = (
            "<table class=overview><thead><tr><th>state</th><th>job</th><th>last run</th>"
            f"<th>last {DOT_RUNS} runs</th><th>ok (7d)</th><th>p50</th><th>p95</th>"
            f"<th>durations</th></tr></thead><tbody>{''.join(j[2] for j in jobs)}</tbody>"
            f"</table>{''.join(j[3] for j in jobs)}"
        )
    else:
        body = ("<p class=empty>No jobs yet. Wrap a command and it appears here: "
                "<code>cronwatch run backup -- /usr/local/bin/backup.sh</code></p>")  # fmt: skip
    csp = dashboard_csp(live=live)
    legend = "".join(f"<i class={c}></i>{w} " for w, c in _CLASS.items())
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{_CSS}</style></head>"
        f"<body{' data-live=1' if live else ''}><header><h1>cronwatch</h1>"
        f"<p>{counts} &middot; generated {_time(now)} &middot; <span id=tz>times in UTC</span> &middot; "
        f"<span class=legend>{legend}</span></p></header><main>{body}</main>"
        f"<script>{_JS}</script></body></html>"
    )


def dashboard_csp(*, live: bool) -> str:
    """The page's Content-Security-Policy: only our own constant <style> and <script> run,
    named by their sha256 (no 'unsafe-inline': should escaping ever miss, injected markup
    still cannot run script or style). The live page may fetch itself.

    The static page carries this in a <meta> tag, where browsers ignore ``frame-ancestors``
    (it is kept there for whoever serves the file to copy into a header); the page's script
    hides it when framed instead. The server sends it as a header, where it holds.
    """
    global _HASHES
    if _HASHES is None:
        import base64
        import hashlib  # here, once: only a render needs it

        def sha(text: str) -> str:
            return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()

        _HASHES = (sha(_CSS), sha(_JS))
    css, js = _HASHES
    return (
        f"default-src 'none'; style-src 'sha256-{css}'; script-src 'sha256-{js}'; "
        "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        + ("; connect-src 'self'" if live else "")
    )


_HASHES: tuple[str, str] | None = None


def write_dashboard(store: Store, path: str, *, now: float, fresh: bool = False) -> None:
    """Render and replace ``path`` atomically, so a reader never sees half a page.

    Unchanged jobs are taken from the current file unless ``fresh`` (a full render).
    """
    previous = None
    if not fresh:
        with contextlib.suppress(OSError), open(path, "rb") as f:
            previous = f.read().decode("utf-8", "replace")
    text = render_dashboard(store, now=now, previous=previous)
    tmp = os.path.join(
        os.path.dirname(os.path.abspath(path)), f".dashboard-{os.getpid()}-{time.time_ns()}.html"
    )
    os.makedirs(os.path.dirname(tmp), exist_ok=True)
    # os.open rather than tempfile (6 ms of imports on every wrapped run); the mode is the
    # current file's, or 0666 less the umask like any new file
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with contextlib.suppress(OSError):
            os.fchmod(fd, os.stat(path).st_mode & 0o777)
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


_CSS = """
:root{--s:#2e9e4f;--f:#d73a3a;--t:#e8890c;--m:#9aa0a6;--r:#3b82f6;--fg:#1f2328;--mut:#656d76;
--bg:#fff;--bd:#d0d7de;--alt:#f6f8fa;color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--mut:#9198a1;--bg:#0d1117;--bd:#30363d;--alt:#161b22}}
body{font:14px/1.45 system-ui,sans-serif;color:var(--fg);background:var(--bg);margin:0 auto;max-width:1200px;padding:0 16px 40px}
header{border-bottom:1px solid var(--bd);margin-bottom:12px}h1{font-size:20px;margin:12px 0 2px}
header p{margin:0 0 10px;color:var(--mut)}a{color:inherit}code,pre,.num,time{font-family:ui-monospace,monospace;font-size:12.5px}
table{border-collapse:collapse;width:100%}th{text-align:left;color:var(--mut);font-weight:500;font-size:12px}
td,th{padding:5px 8px;border-bottom:1px solid var(--bd);white-space:nowrap}.num{text-align:right}
tbody tr:hover{background:var(--alt)}
.pill{display:inline-block;min-width:58px;text-align:center;border-radius:10px;padding:0 8px;font-size:12px;color:#fff;font-weight:600}
.pill.ok{background:var(--s)}.pill.bad{background:var(--f)}.pill.warn{background:var(--t)}.pill.run{background:var(--r)}.pill.muted{background:var(--m)}
i{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:3px;vertical-align:-1px}
i.s,path.s{background:var(--s);fill:var(--s)}i.f,path.f{background:var(--f);fill:var(--f)}
i.t,path.t{background:var(--t);fill:var(--t)}i.m,path.m{background:var(--m);fill:var(--m)}
i.r,path.r{background:var(--r);fill:var(--r)}.dots i{margin-right:2px;width:8px;height:8px}
svg.mini{width:150px;height:24px;display:block}svg.big{width:100%;height:90px;display:block;background:var(--alt)}
section{margin-top:28px;border-top:2px solid var(--bd)}h2{font-size:17px;margin:10px 0 4px}
h2 small{font-size:12.5px;font-weight:400;color:var(--mut);margin-left:8px}
figure{margin:8px 0}figcaption,.note,.facts{color:var(--mut);font-size:12.5px;margin:4px 0}
.runs{border:1px solid var(--bd);border-radius:6px}details.run{border-top:1px solid var(--bd)}
details.run:first-child{border-top:0}summary{cursor:pointer;padding:4px 8px;display:grid;
grid-template-columns:14px 170px 64px 80px 60px 1fr;gap:6px;align-items:center}summary:hover{background:var(--alt)}
.st{font-size:12px;color:var(--mut)}.msg{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
details.run>*:not(summary){margin-left:30px;margin-right:10px}dl{display:grid;grid-template-columns:80px 1fr;
gap:2px 10px;font-size:12.5px}dt{color:var(--mut)}dd{margin:0;word-break:break-all}
pre{background:var(--alt);border:1px solid var(--bd);padding:8px;overflow:auto;max-height:420px;white-space:pre-wrap;word-break:break-all}
.empty{font-size:16px;padding:30px 0}.legend i{margin-left:6px}
"""

# Constant: no job text ever goes in here (escaping does not apply inside <script>).
# Shows times in the reader's zone and keeps the "ago" texts current.
_JS = """
(function(){
var d=document,pad=function(n){return(n<10?'0':'')+n};
function fmt(s){return s<60?Math.round(s)+'s':s<3600?Math.floor(s/60)+'m':s<172800?Math.floor(s/3600)+'h'+pad(Math.floor(s%3600/60))+'m':Math.floor(s/86400)+'d'}
function ages(){var n=Date.now()/1000;d.querySelectorAll('.ago').forEach(function(a){var s=n-parseFloat(a.dataset.t);
a.textContent=s<0?'in '+fmt(-s):fmt(s)+' ago'})}
function local(){d.querySelectorAll('time[data-t]').forEach(function(t){var x=new Date(parseFloat(t.dataset.t)*1000);
if(isNaN(x)||t.title)return;t.title=t.textContent;t.textContent=x.getFullYear()+'-'+pad(x.getMonth()+1)+'-'+
pad(x.getDate())+' '+pad(x.getHours())+':'+pad(x.getMinutes())+':'+pad(x.getSeconds())});ages();
var z=Intl.DateTimeFormat().resolvedOptions().timeZone;if(z&&z!='UTC')d.getElementById('tz').textContent='times in '+z+' (UTC on hover)'}
if(self!==top){d.documentElement.style.display='none';return}
local();setInterval(ages,30000);
// live mode (served page): refresh in place, keeping opened runs open
if(d.body.dataset.live)setInterval(function(){fetch(location.href).then(function(r){return r.text()}).then(function(h){
var open=[].map.call(d.querySelectorAll('details[open]'),function(e){return e.id}),m=new DOMParser().parseFromString(h,'text/html');
['header','main'].forEach(function(s){d.querySelector(s).replaceWith(m.querySelector(s))});d.title=m.title;
open.forEach(function(i){var e=i&&d.getElementById(i);if(e)e.open=true});local()})},30000);
})();
"""
