from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cronwatch.core.errors import ValidationError
from cronwatch.core.schedule import missed_deadlines, parse_schedule, validate_tz

ZONES = [
    "Europe/London",
    "America/New_York",
    "Australia/Lord_Howe",  # 30-minute DST shift
    "Europe/Berlin",
    "America/Sao_Paulo",  # DST at midnight until 2019
    "Pacific/Auckland",
]
DAY = 86400.0


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def local(t: float, tz: str) -> datetime:
    return datetime.fromtimestamp(t, ZoneInfo(tz))


def transitions(tz: str, first: int = 2018, last: int = 2026) -> list[float]:
    """Midnights (UTC) just before each change of UTC offset: day resolution is enough."""
    zone, out = ZoneInfo(tz), []
    day = datetime(first, 1, 1, tzinfo=UTC)
    prev = day.astimezone(zone).utcoffset()
    while day.year <= last:
        nxt = day + timedelta(days=1)
        off = nxt.astimezone(zone).utcoffset()
        if off != prev:
            out.append(day.timestamp())
            prev = off
        day = nxt
    return out


TRANSITIONS = {tz: transitions(tz) for tz in ZONES}


@st.composite
def zone_and_time(draw: st.DrawFn) -> tuple[str, float]:
    """A zone and an instant, usually within three days of one of its DST changes."""
    tz = draw(st.sampled_from(ZONES))
    if draw(st.booleans()):
        base = draw(st.sampled_from(TRANSITIONS[tz]))
        t = base + draw(st.floats(-3 * DAY, 3 * DAY))
    else:
        t = draw(st.floats(ts("2018-01-01T00:00:00+00:00"), ts("2026-12-31T00:00:00+00:00")))
    return tz, t


def first_real(naive: datetime, zone: ZoneInfo) -> datetime:
    """Debian cron: a wall-clock time skipped by DST runs at the first minute that exists."""
    while True:
        aware = naive.replace(tzinfo=zone)  # fold=0: the first of a repeated time
        if aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == naive:
            return aware
        naive += timedelta(minutes=1)


def oracle_fixed(times: list[tuple[int, int]], tz: str, t: float) -> float:
    """Next firing of daily fixed times, enumerated day by day."""
    zone = ZoneInfo(tz)
    today = datetime.fromtimestamp(t, zone).date()
    candidates = [
        first_real(datetime.combine(today + timedelta(days=d), time(h, m)), zone).timestamp()
        for d in range(-1, 4)
        for h, m in times
    ]
    return min(c for c in candidates if c > t)


def oracle_scan(minutes: set[int], hours: set[int], tz: str, t: float) -> float:
    """Next whole UTC minute whose local wall clock matches (cron with a '*' hour/minute)."""
    zone = ZoneInfo(tz)
    u = math.floor(t / 60) * 60 + 60
    while True:
        wall = datetime.fromtimestamp(u, zone)
        if wall.minute in minutes and wall.hour in hours:
            return float(u)
        u += 60


# --- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("*/15 * * * *", "cron"),
        ("0 9 * * mon-fri", "cron"),
        ("0 0 L * *", "cron"),
        ("@daily", "cron"),
        ("@midnight", "cron"),
        ("@ANNUALLY", "cron"),
        ("cron: 0 9 * * *", "cron"),
        ("cron:@hourly", "cron"),
        ("every 2 hours", "interval"),
        ("at 13:37", "at"),
        ("at 08:00, 20:00", "at"),
        ("at 08:00 and 20:00", "at"),
        ("Mon..Fri *-*-* 09:00:00", "oncalendar"),
        ("daily", "oncalendar"),
        ("*-*-* *:00/15:00", "oncalendar"),
        ("Sat,Sun 10:00 Europe/Riga", "oncalendar"),
        ("oncalendar: weekly", "oncalendar"),
        ("OnCalendar:*-*-01 00:00", "oncalendar"),
    ],
)
def test_parse_kinds(text: str, kind: str) -> None:
    s = parse_schedule(text)
    assert s.kind == kind
    assert s.text == text.strip()
    assert s.next_after(ts("2024-05-01T00:00:00+00:00")) > ts("2024-05-01T00:00:00+00:00")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("every 15m", 900),
        ("every 90s", 90),
        ("every day", 86400),
        ("every 1h30m", 5400),
        ("every 2 hours", 7200),
        ("every hour", 3600),
        ("every 1 hour 30 minutes", 5400),
        ("every 10 min", 600),
        ("every 2 weeks", 14 * 86400),
        ("every 1.5h", 5400),
        ("Every 5 Seconds", 5),
    ],
)
def test_intervals(text: str, seconds: float) -> None:
    s = parse_schedule(text)
    assert s.interval == seconds
    assert s.next_after(1000.5, "Europe/Berlin") == 1000.5 + seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "every",
        "every 0s",
        "every 0.5s",
        "every 5",
        "every fortnight",
        "every 500ms",
        "at 25:00",
        "at 9:7",
        "at noon",
        "at 08:00,",
        "61 * * * *",
        "* * * *",
        "0 0 30 2 *",
        "* * * * * *",
        "@reboot",
        "@sometimes",
        "cron: daily",
        "oncalendar: 0 9 * * *",
        "tomorrow morning",
        "Mon..Fry 09:00",
    ],
)
def test_rejected_schedules_name_the_value_and_the_forms(text: str) -> None:
    with pytest.raises(ValidationError) as exc:
        parse_schedule(text)
    message = str(exc.value)
    assert repr(text.strip()) in message
    assert "every 15m" in message and "at 13:37" in message and "OnCalendar" in message


def test_at_times_are_deduplicated_and_grouped_by_minute() -> None:
    s = parse_schedule("at 20:00, 08:00 and 08:00, 09:30")
    assert s.exprs == ("0 8,20 * * *", "30 9 * * *")


@pytest.mark.parametrize("name", ["Europe/Berlin", "UTC", "America/Argentina/Buenos_Aires"])
def test_validate_tz_accepts_iana_names(name: str) -> None:
    assert validate_tz(name) == name


def test_validate_tz_normalises_utc() -> None:
    assert validate_tz("utc") == "UTC"


@pytest.mark.parametrize("name", ["", "Mars/Olympus", "America", "../etc/passwd", "/etc/localtime"])
def test_validate_tz_rejects_unknown(name: str) -> None:
    with pytest.raises(ValidationError, match="IANA"):
        validate_tz(name)


def test_next_after_rejects_unknown_zone() -> None:
    with pytest.raises(ValidationError):
        parse_schedule("@daily").next_after(0.0, "Nowhere/Atlantis")


# --- known DST dates -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "tz", "start", "expected"),
    [
        # spring forward: 02:30 does not exist, Debian cron runs it at 03:00
        ("30 2 * * *", "Europe/Berlin", "2024-03-30T12:00:00+01:00", "2024-03-31T03:00:00+02:00"),
        # fall back: 02:30 happens twice, the job runs once (croniter runs it twice)
        ("30 2 * * *", "Europe/Berlin", "2024-10-26T12:00:00+02:00", "2024-10-27T02:30:00+02:00"),
        ("30 2 * * *", "Europe/Berlin", "2024-10-27T02:30:00+02:00", "2024-10-28T02:30:00+01:00"),
        ("30 2 * * *", "Europe/Berlin", "2024-10-27T02:10:00+01:00", "2024-10-28T02:30:00+01:00"),
        (
            "30 2 * * *",
            "America/New_York",
            "2024-03-09T12:00:00-05:00",
            "2024-03-10T03:00:00-04:00",
        ),
        (
            "30 1 * * *",
            "America/New_York",
            "2024-11-03T01:30:00-04:00",
            "2024-11-04T01:30:00-05:00",
        ),
        (
            "15 2 * * *",
            "Australia/Lord_Howe",
            "2024-10-05T12:00:00+10:30",
            "2024-10-06T02:30:00+11:00",
        ),
        (
            "45 1 * * *",
            "Australia/Lord_Howe",
            "2024-04-07T01:45:00+11:00",
            "2024-04-08T01:45:00+10:30",
        ),
        (
            "0 0 * * *",
            "America/Sao_Paulo",
            "2018-11-03T12:00:00-03:00",
            "2018-11-04T01:00:00-02:00",
        ),
        ("30 1 * * *", "Europe/London", "2024-03-30T12:00:00+00:00", "2024-03-31T02:00:00+01:00"),
    ],
)
def test_known_dst_dates(expr: str, tz: str, start: str, expected: str) -> None:
    assert parse_schedule(expr).next_after(ts(start), tz) == ts(expected)


def fire_times(text: str, tz: str, start: float, end: float) -> list[float]:
    s, out, t = parse_schedule(text), [], start
    while (t := s.next_after(t, tz)) < end:
        out.append(t)
    return out


@pytest.mark.parametrize("tz", ZONES)
@pytest.mark.parametrize(
    ("text", "per_day"),
    [("30 2 * * *", 1), ("0 0 * * *", 1), ("at 01:30", 1), ("at 02:00, 02:45", 2)],
)
def test_daily_jobs_fire_once_per_local_day_across_every_dst_change(
    tz: str, text: str, per_day: int
) -> None:
    for change in TRANSITIONS[tz][-6:]:  # the latest three years with DST
        days: dict[date, int] = {}
        for t in fire_times(text, tz, change - 3 * DAY, change + 3 * DAY):
            day = local(t, tz).date()
            days[day] = days.get(day, 0) + 1
        # Two times fold into one only on a spring-forward day that skips both.
        assert all(1 <= n <= per_day for n in days.values()), (tz, change, days)
        assert len(days) >= 5


def test_wildcard_hour_follows_real_time_through_fall_back() -> None:
    fired = fire_times(
        "*/30 * * * *",
        "Europe/London",
        ts("2024-10-27T00:50:00+01:00"),
        ts("2024-10-27T02:10:00+00:00"),
    )
    assert [local(t, "Europe/London").isoformat() for t in fired] == [
        "2024-10-27T01:00:00+01:00",
        "2024-10-27T01:30:00+01:00",
        "2024-10-27T01:00:00+00:00",
        "2024-10-27T01:30:00+00:00",
        "2024-10-27T02:00:00+00:00",
    ]


def test_wildcard_cron_across_a_half_hour_fall_back() -> None:
    # Lord Howe falls back 30 minutes at 02:00: wall clock 01:30-02:00 comes twice. A
    # wildcard expression follows the UTC clock, so the next match after 00:30 +11:00 is
    # 02:00 +10:30 (two hours and a half later). cronsim alone answers 02:30.
    tz = "Australia/Lord_Howe"
    fired = fire_times(
        "*/30 */2 * * *", tz, ts("2018-04-01T00:30:00+11:00"), ts("2018-04-01T04:10:00+10:30")
    )
    assert [local(t, tz).isoformat() for t in fired] == [
        "2018-04-01T02:00:00+10:30",
        "2018-04-01T02:30:00+10:30",
        "2018-04-01T04:00:00+10:30",
    ]


def test_sparse_wildcard_cron_finds_the_hour_after_a_half_hour_change() -> None:
    # Hourly on 1 April only: the search starts eleven months earlier, across the
    # spring-forward change as well.
    tz = "Australia/Lord_Howe"
    fired = fire_times(
        "0 * 1 4 *", tz, ts("2017-05-01T00:00:00+10:30"), ts("2018-04-01T03:30:00+10:30")
    )
    assert [local(t, tz).isoformat() for t in fired] == [
        "2018-04-01T00:00:00+11:00",
        "2018-04-01T01:00:00+11:00",
        "2018-04-01T02:00:00+10:30",
        "2018-04-01T03:00:00+10:30",
    ]


def test_oncalendar_skips_times_that_do_not_exist() -> None:
    # systemd, unlike cron, does not run a skipped time late.
    s = parse_schedule("*-*-* 02:30:00")
    got = s.next_after(ts("2024-03-30T12:00:00+01:00"), "Europe/Berlin")
    assert got == ts("2024-04-01T02:30:00+02:00")


def test_oncalendar_zone_in_expression_wins() -> None:
    s = parse_schedule("*-*-* 09:00 Asia/Tokyo")
    got = s.next_after(ts("2024-05-01T00:00:00+00:00"), "Europe/Berlin")
    assert got == ts("2024-05-02T09:00:00+09:00")


def test_exhausted_schedule_is_inf() -> None:
    s = parse_schedule("2020-01-01 00:00")
    assert s.next_after(ts("2024-01-01T00:00:00+00:00"), "UTC") == math.inf


# --- properties ----------------------------------------------------------------------------

HM = st.tuples(st.integers(0, 23), st.integers(0, 59))
# Hours near the usual DST switch times are where the bugs live.
DST_HM = st.tuples(st.sampled_from([0, 1, 2, 3, 23]), st.sampled_from([0, 15, 29, 30, 45, 59]))


@settings(max_examples=80, deadline=None)
@given(zone_and_time(), st.lists(st.one_of(HM, DST_HM), min_size=1, max_size=3))
def test_at_schedules_match_the_day_by_day_oracle(zt: tuple[str, float], times: list) -> None:
    tz, t = zt
    text = "at " + ", ".join(f"{h:02d}:{m:02d}" for h, m in times)
    assert parse_schedule(text).next_after(t, tz) == oracle_fixed(times, tz, t)


@settings(max_examples=60, deadline=None)
@given(zone_and_time(), DST_HM, st.sets(st.sampled_from([0, 1, 2, 3, 12]), min_size=1, max_size=3))
def test_fixed_cron_matches_the_day_by_day_oracle(
    zt: tuple[str, float], hm: tuple, hours: set
) -> None:
    tz, t = zt
    minute = hm[1]
    expr = f"{minute} {','.join(map(str, sorted(hours)))} * * *"
    expected = oracle_fixed([(h, minute) for h in hours], tz, t)
    assert parse_schedule(expr).next_after(t, tz) == expected


@settings(max_examples=50, deadline=None)
@given(
    zone_and_time(),
    st.sampled_from(["*/15", "*/30", "*", "0", "30", "45"]),
    st.sampled_from(["*", "*/2"]),
)
def test_wildcard_cron_matches_a_minute_scan(zt: tuple[str, float], mf: str, hf: str) -> None:
    tz, t = zt

    def field(f: str, size: int) -> set[int]:
        if f == "*":
            return set(range(size))
        if f.startswith("*/"):
            return set(range(0, size, int(f[2:])))
        return {int(f)}

    expected = oracle_scan(field(mf, 60), field(hf, 24), tz, t)
    assert parse_schedule(f"{mf} {hf} * * *").next_after(t, tz) == expected


SCHEDULES = [
    "30 2 * * *",
    "*/15 * * * *",
    "0 */2 * * *",
    "0 9 * * mon-fri",
    "@weekly",
    "at 01:30, 02:30",
    "every 90m",
    "*-*-* 02:30:00",
    "Mon..Fri 09:00",
    "*-*-* *:00/20:00",
    "oncalendar: hourly",
]


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(SCHEDULES), zone_and_time(), st.floats(0, 2 * DAY))
def test_next_after_is_strictly_after_and_monotone(text: str, zt: tuple, gap: float) -> None:
    tz, t1 = zt
    t2 = t1 + gap
    s = parse_schedule(text)
    n1, n2 = s.next_after(t1, tz), s.next_after(t2, tz)
    assert n1 > t1 and n2 > t2
    assert n1 <= n2
    # calendar forms skip nothing: any t2 before n1 sees the same next time
    if s.interval is None and t2 < n1:
        assert n2 == n1


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(ZONES), st.integers(0, 23), st.sampled_from([0, 15, 30, 45]), zone_and_time()
)
def test_oncalendar_fires_at_the_wall_clock_time_and_only_then(tz, hour, minute, zt) -> None:
    _, t = zt
    got = parse_schedule(f"*-*-* {hour:02d}:{minute:02d}:00").next_after(t, tz)
    wall = local(got, tz)
    assert (wall.hour, wall.minute, wall.second) == (hour, minute, 0)
    assert got > t and got - t <= 2 * DAY


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 23), st.integers(0, 59), zone_and_time())
def test_oncalendar_and_cron_agree_in_utc(hour: int, minute: int, zt: tuple) -> None:
    _, t = zt
    cron = parse_schedule(f"{minute} {hour} * * *").next_after(t, "UTC")
    cal = parse_schedule(f"*-*-* {hour}:{minute}:00").next_after(t, "UTC")
    assert cron == cal


@settings(max_examples=30, deadline=None)
@given(st.floats(1, 30 * DAY), st.floats(0, 2e9), st.integers(1, 20))
def test_intervals_are_exact(seconds: float, anchor: float, n: int) -> None:
    s = parse_schedule(f"every {seconds}s")
    t = anchor
    for _ in range(n):
        nxt = s.next_after(t, "Australia/Lord_Howe")
        assert nxt == t + seconds
        t = nxt


# --- missed deadlines ----------------------------------------------------------------------


def test_missed_interval_runs() -> None:
    assert missed_deadlines("every 60s", "UTC", 10, anchor=0, now=185) == [60, 120]
    assert missed_deadlines("every 60s", "UTC", 10, anchor=0, now=190) == [60, 120, 180]
    assert missed_deadlines("every 60s", "UTC", 10, anchor=0, now=69) == []


def test_missed_daily_runs_in_local_time() -> None:
    anchor = ts("2024-03-29T10:00:00+01:00")
    now = ts("2024-04-01T09:05:00+02:00")
    got = missed_deadlines(parse_schedule("0 9 * * *"), "Europe/Berlin", 600, anchor, now)
    assert got == [ts("2024-03-30T09:00:00+01:00"), ts("2024-03-31T09:00:00+02:00")]


def test_missed_deadlines_are_capped_and_resume_from_the_last() -> None:
    first = missed_deadlines("every 1m", "UTC", 0, anchor=0, now=3600, limit=25)
    assert first == [60.0 * k for k in range(1, 26)]
    rest = missed_deadlines("every 1m", "UTC", 0, anchor=first[-1], now=3600, limit=100)
    assert rest == [60.0 * k for k in range(26, 61)]


def test_missed_deadlines_of_an_exhausted_schedule() -> None:
    assert missed_deadlines("2020-01-01 00:00", "UTC", 0, 0, ts("2030-01-01T00:00:00+00:00")) == [
        ts("2020-01-01T00:00:00+00:00")
    ]


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(SCHEDULES), zone_and_time(), st.floats(0, 3 * DAY), st.floats(0, 3600))
def test_missed_deadlines_chain(text: str, zt: tuple, span: float, grace: float) -> None:
    tz, anchor = zt
    now = anchor + span
    s = parse_schedule(text)
    got = missed_deadlines(s, tz, grace, anchor, now)
    assert got == sorted(set(got))
    prev = anchor
    for e in got:
        assert e == s.next_after(prev, tz) and e + grace <= now
        prev = e
    assert len(got) == 100 or s.next_after(prev, tz) + grace > now
