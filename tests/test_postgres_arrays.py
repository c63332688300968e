# ruff: noqa: E402  (after the importorskip of psycopg)
"""The PostgreSQL store's own array encoding (store/postgres/arrays.py) against psycopg's
dumping of the same lists, on the session's throwaway cluster: the same values stored,
the same errors, NULs replaced; and a quick ping batch that carries a NUL stored in its
one statement."""

from __future__ import annotations

import dataclasses
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg")  # the store's extra: skipped without it

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import errors as pg_errors
from psycopg.adapt import PyFormat, Transformer

from cronwatch.server.apply import Applier
from cronwatch.server.ingest import Committer
from cronwatch.server.ping import parse_ping
from cronwatch.store import open_store
from cronwatch.store.postgres import arrays, backend
from cronwatch.store.postgres.dialect import unnest_insert

NAN, INF = float("nan"), float("inf")
INT4 = (-(2**31), 2**31 - 1)
INT8 = (-(2**63), 2**63 - 1)


@pytest.fixture(scope="module")
def pg(pg_cluster: Any) -> Iterator[Any]:
    """A connection set up as the store's are (``_configure``)."""
    conn = psycopg.connect(pg_cluster.url(), autocommit=True)
    backend._configure(conn)
    yield conn
    conn.close()


def select(pg: Any, cast: str, value: Any) -> Any:
    return pg.execute(f"SELECT %b::{cast}[]", [value]).fetchone()[0]


def same(a: list[Any], b: list[Any]) -> bool:
    """Equal lists, a float's bits included (NaN, -0.0)."""
    return len(a) == len(b) and all(
        (x is None and y is None)
        or (
            isinstance(x, float)
            and isinstance(y, float)
            and struct.pack("!d", x) == struct.pack("!d", y)
        )
        or (type(x) is type(y) and not isinstance(x, float) and x == y)
        for x, y in zip(a, b, strict=True)
    )


def check(pg: Any, cast: str, values: list[Any]) -> list[Any]:
    """``values`` encoded here and by psycopg (their NULs replaced first: it would refuse
    them) come back the same; returns what came back."""
    ours = select(pg, cast, arrays.encode(cast, values))
    theirs = select(pg, cast, backend.without_nul(values))
    assert same(ours, theirs), (values, ours, theirs)
    return list(ours)


CASES = {
    "float8": [
        [], [None], [None, None, None], [1.5], [None, 1.5, 2.5], [1.5, None, 2.5],
        [1.5, 2.5, None], [NAN, INF, -INF, -0.0, 0.0, 5e-324, 1.7976931348623157e308],
        [0, 1700000000], [2**53 + 1, -(2**63), 2**63 - 1], [0, None, 1],
        [1700000000.123456, 1e-300],
    ],
    "bigint": [
        [], [None], [None, 1, 2], [1, None, 2], [1, 2, None], [*INT8, 0, -1, None],
        [2**31, -(2**31) - 1, 2**32],
    ],
    "integer": [
        [], [None, None], [None, 7], [7, None, -7], [7, None], [*INT4, 0, -1], [*INT4, None],
    ],
    "text": [
        [], [None], [None, "a", "b"], ["a", None, "b"], ["a", "b", None], [""], ["", None, ""],
        ["héllo", "日本語", "😀 emoji", "a\u0301", "\ufeff", "tab\tquote\"brace{},"],
        ["x" * 5000, "y" * 1023, "z" * 1024, None, "w" * 1025], ["é" * 600, "ascii"],
        ["NULL", "null", "\\"],
    ],
}  # fmt: skip


@pytest.mark.parametrize(
    ("cast", "values"),
    [(cast, values) for cast, cases in CASES.items() for values in cases],
    ids=lambda v: v if isinstance(v, str) else repr(v)[:40],
)
def test_an_array_reads_back_as_psycopgs_does(pg: Any, cast: str, values: list[Any]) -> None:
    as_float = cast == "float8"  # ints in a float8 array come back as floats
    expected = [v if v is None or not as_float else float(v) for v in values]
    assert same(check(pg, cast, values), expected)


def test_a_nul_becomes_u_fffd_as_without_nul_makes_it(pg: Any) -> None:
    values = ["a\x00b", None, "\x00", "\x00\x00é\x00", "clean"]
    assert select(pg, "text", arrays.encode("text", values)) == [
        "a\ufffdb",
        None,
        "\ufffd",
        "\ufffd\ufffdé\ufffd",
        "clean",
    ]
    assert check(pg, "text", ["only\x00nuls\x00", "x"]) == ["only\ufffdnuls\ufffd", "x"]
    # psycopg's binary dumping leaves the NUL to the server, which refuses it
    with pytest.raises(pg_errors.CharacterNotInRepertoire):
        select(pg, "text", ["a\x00b"])


@pytest.mark.parametrize("values", [["\ud800"], [None, "ok", "lone \udfff"], ["a", "\ud83d"]])
def test_a_lone_surrogate_raises_what_psycopg_raises(pg: Any, values: list[Any]) -> None:
    with pytest.raises(UnicodeEncodeError):
        select(pg, "text", values)
    with pytest.raises(UnicodeEncodeError):
        arrays.encode("text", values)


@pytest.mark.parametrize(
    ("cast", "values", "message"),
    [
        ("integer", [2**31], "integer out of range"),
        ("integer", [None, INT4[0] - 1], "integer out of range"),
        ("integer", [0, 2**63], "integer out of range"),
        ("bigint", [2**63], "bigint out of range"),
        ("bigint", [1, None, INT8[0] - 1], "bigint out of range"),
        ("bigint", [2**100], "bigint out of range"),
        ("float8", [2**1024], "out of range for type double precision"),
        ("float8", [None, -(2**1100)], "out of range for type double precision"),
    ],
)
def test_a_number_out_of_range_raises_psycopgs_error_unsent(
    pg: Any, cast: str, values: list[Any], message: str
) -> None:
    with pytest.raises(pg_errors.NumericValueOutOfRange) as theirs:
        select(pg, cast, values)
    assert message in str(theirs.value)
    with pytest.raises(pg_errors.NumericValueOutOfRange, match=message):
        arrays.encode(cast, values)


@pytest.mark.parametrize(
    ("cast", "values"),
    [
        ("integer", [True, False]),  # psycopg sends boolean[], which PostgreSQL casts
        ("integer", [1.5, 2.5]),  # float8[], rounded by PostgreSQL
        ("bigint", [1, True]),
        ("float8", [True]),
        ("float8", ["1.5"]),
        ("text", [1, 2]),
        ("text", ["a", b"b"]),
    ],
)
def test_other_elements_are_left_to_psycopg(pg: Any, cast: str, values: list[Any]) -> None:
    assert arrays.encode(cast, values) is None
    (param,) = arrays.params(f"SELECT %b::{cast}[]", [values])
    assert param == values
    try:
        expected = select(pg, cast, values)
    except psycopg.Error as e:
        with pytest.raises(type(e)):
            select(pg, cast, param)
    else:
        assert select(pg, cast, param) == expected


def test_a_float8_array_may_mix_ints_and_floats(pg: Any) -> None:
    """psycopg refuses such a list (mixed types); the values are plain enough."""
    with pytest.raises(psycopg.DataError, match="mixed types"):
        select(pg, "float8", [1, 2.5])
    assert select(pg, "float8", arrays.encode("float8", [1, 2.5, None])) == [1.0, 2.5, None]


def test_the_bytes_are_psycopgs_where_it_picks_the_same_type(pg: Any) -> None:
    dump = Transformer(pg).get_dumper
    for cast, values in [
        ("float8", [1.5, None, NAN, -0.0]),
        ("text", ["a", None, "é😀", ""]),
        ("bigint", [2**40, None, -(2**40)]),  # psycopg's int8 for these magnitudes
    ]:
        ours = arrays.encode(cast, values)
        assert ours == dump(values, PyFormat.BINARY).dump(values)


def test_the_statements_arrays_are_found_by_their_casts() -> None:
    found = arrays._placeholders(backend._QUICK_SQL)
    assert found == (
        "float8", "text", "text",  # events
        "text", "bigint", "text", "text", "float8", "float8", "float8", "integer",
        "text", "text", "text",  # runs
        "bigint", None, None,  # jids, epoch, seal
    )  # fmt: skip
    insert = unnest_insert(*backend.PostgresStore._FINISHED)
    assert insert is not None
    assert arrays._placeholders(insert + " AND id = ANY(%b::bigint[])") == (
        "text", "bigint", "text", "text", "float8", "float8", "float8", "integer",
        "text", "text", "text", "bigint",
    )  # fmt: skip
    assert arrays._placeholders("SELECT '%b::text[]', %s, %%, %b::numeric[]") == (None, None)
    assert arrays._placeholders("SELECT %(a)b::text[]") is None
    params = [[1.5], 3, ["x\x00"]]
    out = arrays.params("SELECT %b::float8[], %b, %b::text[]", params)
    assert (type(out[0]), out[1], type(out[2])) == (arrays.Float8Array, 3, arrays.TextArray)
    assert params == [[1.5], 3, ["x\x00"]]  # the caller's list is left as it was
    # another client encoding: psycopg encodes the text, its NULs replaced all the same
    out = arrays.params("SELECT %b::float8[], %b, %b::text[]", params, utf8=False)
    assert (type(out[0]), out[2]) == (arrays.Float8Array, ["x\ufffd"])


# --- against psycopg's dumping, over random lists ------------------------------------------
def nullable(elements: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(st.none() | elements, max_size=40)


STRATEGIES: dict[str, st.SearchStrategy[list[Any]]] = {
    "float8": nullable(st.floats()) | nullable(st.integers(*INT8)),
    "bigint": nullable(st.integers(*INT8)),
    "integer": nullable(st.integers(*INT4)),
    "text": nullable(st.text()),
}


@pytest.mark.parametrize("cast", sorted(STRATEGIES))
def test_random_lists_read_back_as_psycopgs_do(pg: Any, cast: str) -> None:
    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
    @given(STRATEGIES[cast])
    def run(values: list[Any]) -> None:
        check(pg, cast, values)

    run()


@pytest.mark.parametrize(
    ("cast", "low", "high"),
    [("integer", *INT4), ("bigint", *INT8)],
)
def test_random_ints_out_of_range_raise_as_psycopgs_do(
    pg: Any, cast: str, low: int, high: int
) -> None:
    beyond = st.integers(max_value=low - 1) | st.integers(min_value=high + 1)

    @settings(max_examples=50, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
    @given(nullable(st.integers(low, high)), beyond, st.data())
    def run(values: list[Any], bad: int, data: st.DataObject) -> None:
        values.insert(data.draw(st.integers(0, len(values))), bad)
        with pytest.raises(pg_errors.NumericValueOutOfRange):
            select(pg, cast, values)
        with pytest.raises(pg_errors.NumericValueOutOfRange):
            arrays.encode(cast, values)

    run()


# --- the ping writer's statement ----------------------------------------------------------
T0 = float(int(time.time()))


def test_a_quick_batch_with_a_nul_is_one_statement_stored_with_u_fffd(
    pg_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(pg_database())
    try:
        store.writer_maintenance()  # the ping writer's store: the quick batch's one statement
        # ... unless a retention sweep is due (by the clock): none in this test
        monkeypatch.setattr(store, "RETENTION_EVERY", 3600.0)
        key = store.ensure_ping_key("q", now=T0)
        applier = Applier(store.project_ping_key())
        committer = Committer(store, cache=applier)
        statements: list[tuple[str, bool]] = []
        arrays_of = store._arrays
        direct = backend._Prepared.run  # the steady batch's statement goes this way

        def spy(sql: str, params: list[Any], pg: Any = None) -> Any:
            try:
                cur = arrays_of(sql, params, pg)
            except Exception:
                statements.append((sql, False))
                raise
            statements.append((sql, True))
            return cur

        def spy_direct(self: Any, pg: Any, params: list[Any]) -> None:
            try:
                direct(self, pg, params)
            except Exception:
                statements.append((self.sql, False))
                raise
            statements.append((self.sql, True))

        monkeypatch.setattr(store, "_arrays", spy)
        monkeypatch.setattr(backend._Prepared, "run", spy_direct)

        def record(query: str, n: int, now: float) -> list[tuple[bool, Any]]:
            p = parse_ping(f"/ping/{key}", query)
            assert p is not None
            return committer.commit_each(
                lambda s, item: applier.apply(s, item, None, now=now), [p] * n
            )

        assert all(ok for ok, _v in record("", 1, T0))  # evaluated: the steady state
        assert all(ok for ok, _v in record("", 2, T0 + 5))  # quick: the epoch read, swept
        quick = applier.quick
        statements.clear()
        results = record("msg=a%00b%00%F0%9F%98%80", 3, T0 + 10)
        assert all(ok for ok, _v in results), results
        assert applier.quick == quick + 3
        assert statements == [(backend._QUICK_SQL, True)]
        stored = store.list_runs(job="q", oldest_first=True)[3:]
        assert [r.message for r in stored] == ["a\ufffdb\ufffd😀"] * 3
    finally:
        store.close()


def test_a_bad_string_in_a_quick_batch_fails_its_own_ping_only(
    pg_database: Callable[[], str],
) -> None:
    """psycopg raised UnicodeEncodeError for a lone surrogate, as the encoding does: the
    batch is replayed a ping at a time and that ping alone fails, nothing written of it."""
    store = open_store(pg_database())
    try:
        store.writer_maintenance()
        key = store.ensure_ping_key("q", now=T0)
        applier = Applier(store.project_ping_key())
        committer = Committer(store, cache=applier)
        good = parse_ping(f"/ping/{key}", "msg=fine")
        assert good is not None
        assert all(ok for ok, _v in committer.commit_each(
            lambda s, item: applier.apply(s, item, None, now=T0), [good]))  # fmt: skip
        bad = dataclasses.replace(good, message="lone \udc80")  # a JSON body's \udc80
        results = committer.commit_each(
            lambda s, item: applier.apply(s, item, None, now=T0 + 10), [good, bad, good]
        )
        assert [ok for ok, _v in results] == [True, False, True], results
        assert isinstance(results[1][1].__cause__, UnicodeEncodeError)  # its rows' BufferLost
        assert [r.message for r in store.list_runs(job="q", oldest_first=True)] == ["fine"] * 3
    finally:
        store.close()


def test_same_tells_nan_and_signed_zeros_apart() -> None:
    """``same``, which the tests above compare with, sees a float's bits."""
    assert same([NAN, -0.0, None, "a"], [NAN, -0.0, None, "a"])
    assert not same([-0.0], [0.0]) and not same([1], [1.0]) and not same([None], [0.0])


def test_the_steady_batch_survives_its_statement_deallocated_and_its_connection_lost(
    pg_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The steady batch's statement is prepared once a connection, outside psycopg: after
    a ``DEALLOCATE ALL`` (a pooler, an administrator) it is prepared again, and after the
    connection is lost the batch is retried on a new one; every ping acknowledged is
    stored, each once."""
    import psycopg

    url = pg_database()
    store = open_store(url)
    try:
        store.writer_maintenance()
        monkeypatch.setattr(store, "RETENTION_EVERY", 3600.0)
        key = store.ensure_ping_key("q", now=T0)
        applier = Applier(store.project_ping_key())
        committer = Committer(store, cache=applier)
        p = parse_ping(f"/ping/{key}", "")
        assert p is not None
        prepared: list[Any] = []
        prepare = backend._Prepared._prepare

        def spy(self: Any, pg: Any) -> None:
            prepared.append(pg.pgconn)
            prepare(self, pg)

        monkeypatch.setattr(backend._Prepared, "_prepare", spy)

        def record(n: int, now: float) -> list[bool]:
            return [ok for ok, _v in committer.commit_each(
                lambda s, item: applier.apply(s, item, None, now=now), [p] * n)]  # fmt: skip

        acknowledged = 0
        for now in (T0, T0 + 5, T0 + 10):  # evaluated, read, then steady
            acknowledged += sum(record(2, now))
        assert acknowledged == 6 and len(prepared) == 1 and applier.quick >= 2
        store.conn.pg.execute("DEALLOCATE ALL")  # type: ignore[attr-defined]
        store.conn.pg.execute("COMMIT")  # type: ignore[attr-defined]
        quick = applier.quick
        acknowledged += sum(record(3, T0 + 15))
        assert acknowledged == 9 and applier.quick == quick + 3
        assert len(prepared) == 2  # prepared again, on the same connection
        with psycopg.connect(url, autocommit=True) as admin:
            pid = store.conn.pg.info.backend_pid  # type: ignore[attr-defined]
            assert admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone()[0]
        acknowledged += sum(record(3, T0 + 20))  # fails on the old one, then written anew
        quick = applier.quick
        acknowledged += sum(record(3, T0 + 25))  # steady again: prepared on the new one
        assert acknowledged == 15 and applier.quick == quick + 3
        assert len(prepared) == 3 and prepared[-1] is not prepared[0]
        assert store.job_stats("q")["runs"] == acknowledged
    finally:
        store.close()
