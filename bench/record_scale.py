"""Scale of the record (issue 17): what a request costs with 10^6 decisions stored against 10^3, in one run.

    python bench/record_scale.py                      # 10^6 decisions, 10^5 queued reviews (SQLite; ~10 min)
    python bench/record_scale.py --scale 20000        # a quick look (reviews: scale/10)
    python bench/record_scale.py --postgres-url postgresql://postgres@127.0.0.1:5432/test   # PostgreSQL too
                                                      # (GATEWAY_TEST_POSTGRES_URL is used when set)

Per backend, two databases with the real schema (the Alembic migrations `gateway db upgrade` runs), the example
model and one key per role: "small" holds 10^3 decisions and 10^2 queued reviews, "big" `--scale` decisions and
`--reviews` queued reviews. Each starts from real decisions posted through the app (validation, score, exact
explanation, notice, audit leaf, idempotency record, monitor-only values, recourse); the bulk rows are copies of
those rows with new ids (Core `insert()` executemany in batches) spread over the last two years, ~3 decisions per
person, one person with enough decisions for 1,000 pages of /v1/me/decisions; notices delivered, explanations ready,
audit leaves not yet sequenced. Both apps run in this process (Flask test client, no rate limits, no background
threads) and are measured in alternating blocks, so drift on the shared machine falls on both alike:

- decision: POST /v1/models/german-credit/decisions p50, big / small          (target <= 1.2)
- claim: POST /v1/reviews/claim p50 (each claim released again, untimed), big / small   (target <= 1.2)
- my_decisions: GET /v1/me/decisions page 1,000 (keyset `after`) / page 1 on big      (flat: <= 1.2)
- reviews_list: GET /v1/reviews page 1,000 (keyset `after`) / page 1 on big, and page 1 big / small (the page's
  `total` and `overdue_total` are counted up to LIST_COUNT_CAP, 10,000: a lower bound beyond)
- metrics: GET /metrics (the cached copy) big / small, and the computation a refresh runs (uncached) big / small,
  each after one more decision; the first refresh of each database (it rolls the stored history up, once) apart

For /metrics, compare databases that differ only in what they store, not in their recent activity:

    python bench/record_scale.py --scale 100000 --recent 1000 --metrics-only

puts the same 1,000 decisions (and the same 100 queued reviews) in the last 29 days of both databases and the
others over the 300 days ending 31 days ago (outside the 30-day oversight window, within the retention period:
nothing waits for the purge), with their extra queued
reviews requested in the last 10 days (none overdue yet) and the audit log sequenced, as a running deployment
keeps it. Without --recent, the big database also has 1,000 times the recent traffic, so its 30-day oversight
window holds 1,000 times the decisions (bounded on /metrics by OVERSIGHT_METRICS_SAMPLE).

`--only pages` (or decision, claim, metrics; repeatable) measures only those figures. Prints one JSON object and
writes it to `--output` (bench/results/record_scale.json: keep that for the full run); progress on stderr.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
from prometheus_client import generate_latest  # noqa: E402

from gateway import create_app, reviews  # noqa: E402
from gateway.access import keyset_cursor  # noqa: E402
from gateway.auditlog import store  # noqa: E402
from gateway.auth import create_key  # noqa: E402
from gateway.config import normalise_database_url  # noqa: E402
from gateway.contacts import encrypt_contact, encrypt_monitoring, new_data_key  # noqa: E402
from gateway.db import write_transaction  # noqa: E402
from gateway.extensions import db  # noqa: E402
from gateway.models import (  # noqa: E402
    Decision,
    Explanation,
    IdempotencyRecord,
    LogLeaf,
    MonitoringValues,
    Notification,
    Recourse,
    ReviewRequest,
    table,
)
from gateway.settings import current_settings  # noqa: E402
from tests.conftest import load_train_module, make_config, seed  # noqa: E402
from tests.support.citizens import IdentityProvider, valid_iin  # noqa: E402
from tests.support.gateway_server import example_rows  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "record_scale.json"
FIGURES = ("decision", "claim", "pages", "metrics")
HEAVY_IIN = "921029350851"  # the person with 1,000 pages of decisions
MODEL = "german-credit"
BATCH = 5000
NOW = dt.datetime.now(dt.UTC)
SPAN = dt.timedelta(days=730)
WINDOW = dt.timedelta(days=29)  # within the default OVERSIGHT_METRICS_DAYS (30) whatever the time of day
HISTORY = dt.timedelta(days=300)  # --recent: the older decisions (from 331 to 31 days ago: within the retention of 365)


def say(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


def ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 3)


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


# --- one database, its app and its bulk rows -----------------------------------------------------------

@dataclass
class Side:
    name: str
    url: str
    app: Any
    keys: dict[str, str]
    counts: dict[str, int] = field(default_factory=dict)
    load_seconds: float = 0.0
    heavy_subject: str = ""

    @property
    def client(self) -> Any:
        return self.app.test_client()

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


def decision_body(row: dict[str, Any], iin: str, i: int) -> dict[str, Any]:
    return {"subject": {"iin": iin, "language": ("kk", "ru", "en")[i % 3],
                        "contact": {"email": f"person{i}@example.kz"}},
            "features": row, "monitoring": {"sex": ("female", "male")[i % 2]}, "reference": f"application-{i}"}


def person(i: int) -> str:
    """A valid IIN per number (born 1950-1989, a 1900s century digit, the number as serial)."""
    return valid_iin_near(f"{50 + i % 40:02d}{1 + (i // 40) % 12:02d}{1 + (i // 480) % 28:02d}3{i % 10_000:04d}")


def valid_iin_near(first11: str) -> str:
    """A valid IIN from 11 digits (the serial's last digit moved until a check digit exists)."""
    for last in range(10):
        try:
            return valid_iin(first11[:10] + str((int(first11[10]) + last) % 10))
        except ValueError:
            continue
    raise ValueError(first11)


def make_side(name: str, url: str, folder: Path, manifest: Path, idp: IdentityProvider,
              count_cap: int | None = None) -> Side:
    folder.mkdir(parents=True, exist_ok=True)
    capped = {"LIST_COUNT_CAP": count_cap} if count_cap else {}
    config = make_config(url, folder, RATELIMIT_ENABLED=False, NOTIFY_DISPATCHER_THREAD=False, JOBS_THREAD=False,
                         METRICS_MAX_AGE_S=15.0, **capped, **idp.config())
    keys = seed(create_app(config), manifest)
    app = create_app(config)
    with app.app_context(), write_transaction():
        _, keys["metrics"] = create_key(name="scraper", role="metrics", body="Operations")
    return Side(name, url, app, keys)


def post_templates(side: Side, rows: list[dict[str, Any]], count: int) -> list[str]:
    """Real decisions through the app: the rows every bulk copy is made from (one about the heavy person)."""
    client, made = side.client, []
    for i in range(count):
        iin = HEAVY_IIN if i == 0 else person(10_000 + i)
        resp = client.post(f"/v1/models/{MODEL}/decisions", json=decision_body(rows[i % len(rows)], iin, i),
                           headers={**side.auth("agency_a"), "Idempotency-Key": f"template-{i}"})
        assert resp.status_code == 201, resp.get_json()
        made.append(resp.get_json()["decision_id"])
    resp = client.post(f"/v1/decisions/{made[1]}/reviews", headers=side.auth("agency_a"),
                       json={"point_of_view": "The amount was misread: it is half that.",
                             "contest_grounds": ["other"]})
    assert resp.status_code == 201, resp.get_json()
    return made


FAMILY = {  # table -> the column naming the decision
    table(Explanation): "decision_id", table(Notification): "decision_id", table(MonitoringValues): "decision_id",
    table(Recourse): "decision_id", table(IdempotencyRecord): "resource_id", table(LogLeaf): "object_id",
}


def read_templates(conn: Any, ids: list[str]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Each template decision's rows in every table of its family, as typed values."""
    found: dict[str, dict[str, list[dict[str, Any]]]] = {i: {} for i in ids}
    decisions = table(Decision)
    for row in conn.execute(sa.select(decisions).where(decisions.c.id.in_(ids))).mappings():
        found[row["id"]]["decisions"] = [dict(row)]
    for t, column in FAMILY.items():
        for row in conn.execute(sa.select(t).where(t.c[column].in_(ids))).mappings():
            found[row[column]].setdefault(t.name, []).append(dict(row))
    return found


def shifted(row: dict[str, Any], delta: dt.timedelta) -> dict[str, Any]:
    return {k: (v + delta if isinstance(v, dt.datetime) else v) for k, v in row.items()}


def bulk_rows(templates: dict[str, dict[str, list[dict[str, Any]]]], natives: dict[str, Native], heavy_subject: str,
              n: int, heavy: int, tag: str, contact_key: bytes,
              recent: int | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(table, row in driver terms) for `n` copied decisions: created over the last two years, oldest first;
    `heavy` of them about the heavy person (spread evenly), the others ~3 per person. Each copy has its own
    data key (wrapped for its id), contact and monitor-only values encrypted with it, as the decision path
    stores them: the oversight figures decrypt them. With `recent`, the last `recent` copies are made over the last
    29 days (the /metrics window) and the others over the HISTORY before it: every database then has the same
    recent activity and differs only in what it stores."""
    families = []
    for family in templates.values():  # each template row in driver terms once, with its datetime columns
        converted = {}
        for name, rows in family.items():
            native = natives[name]
            converted[name] = [(native.native(r), {k: v for k, v in r.items() if isinstance(v, dt.datetime)})
                               for r in rows]
        families.append((family["decisions"][0]["created_at"], converted))
    start = NOW - SPAN - dt.timedelta(days=1)
    step = SPAN / max(n, 1)
    if recent is not None:
        window_start = NOW - WINDOW
        older = max(n - recent, 0)
        # The history ends before the oversight window's first midnight (30 UTC days back, today included).
        start, step = NOW - dt.timedelta(days=31) - HISTORY, HISTORY / max(older, 1)
        recent_step = (WINDOW - dt.timedelta(hours=1)) / max(min(recent, n), 1)
    every = max(1, n // heavy) if heavy else 0
    delivered = natives["notifications"].value("status", "delivered")
    for j in range(n):
        source_created, family = families[j % len(families)]
        created = start + step * j if recent is None or j < older else window_start + recent_step * (j - older)
        delta = created - source_created
        did = f"dec_{tag}{j:010d}"
        for name, rows in family.items():
            native = natives[name]
            for k, (row, times) in enumerate(rows):
                out = dict(row)
                for column, at in times.items():
                    out[column] = native.value(column, at + delta)
                if name == "decisions":
                    data_key = new_data_key(contact_key, did)
                    out["data_key"] = data_key.wrapped
                    out["contact_ciphertext"] = encrypt_contact(data_key, {"email": f"person{j}@example.kz"})
                    out["id"] = did
                    out["subject_ref"] = heavy_subject if every and j % every == 0 and j // every < heavy else \
                        f"{tag}{(j // 3):062x}"
                    out["reference"] = f"bulk-{j}"
                elif name == "log_leaves":
                    out["seq"] = None
                    out["object_id"] = did
                elif name == "idempotency_keys":
                    out["key"] = f"bulk-{tag}-{j}"
                    out["resource_id"] = did
                else:
                    out["decision_id"] = did
                    if name == "monitoring_values":
                        out["ciphertext"] = encrypt_monitoring(data_key, {"sex": ("female", "male")[j % 2]})
                    if "id" in out:
                        out["id"] = f"{name[:3]}_{tag}{j:010d}_{k}"
                if name == "notifications":  # the old notices went out long ago
                    out.update(status=delivered, attempts=1, last_error=None, claimed_by=None, lease_expires_at=None,
                               next_attempt_at=native.value("next_attempt_at", created),
                               delivered_at=native.value("delivered_at", created + dt.timedelta(seconds=20)))
                    if "finished_at" in native.procs:  # (a schema before 0023 has no such column)
                        out["finished_at"] = native.value("finished_at", created + dt.timedelta(seconds=20))
                yield name, out


def review_rows(template: dict[str, Any], native: Native, decision_ids: list[str],
                tag: str, days: int = 30) -> Iterator[tuple[str, dict[str, Any]]]:
    """Queued review requests on these decisions, requested over the last `days` days (due 15 working days later:
    with 30, a third of them are overdue; with 10, none is)."""
    for j, did in enumerate(decision_ids):
        requested = NOW - dt.timedelta(days=days) + dt.timedelta(days=days) * j / max(len(decision_ids), 1)
        row = shifted(template, requested - template["requested_at"])
        row.update(id=f"rev_{tag}{j:010d}", decision_id=did, status="queued", claimed_by=None,
                   lease_expires_at=None, fencing_token=0)
        yield "reviews", native.native(row)


class Native:
    """One table's insert in the driver's own terms: the statement compiled once, and each column's bind
    processor (JSON, datetimes) applied once per template value, not once per copied row."""

    def __init__(self, t: sa.Table, dialect: Any) -> None:
        self.table = t
        self.names = [c.name for c in t.columns if not (c.primary_key and c.autoincrement is True
                                                          and isinstance(c.type, sa.Integer))]
        self.procs = {c.name: c.type._cached_bind_processor(dialect) for c in t.columns}
        self.dialect = dialect.name
        compiled = sa.insert(t).compile(dialect=dialect, column_keys=self.names)
        self.sql = str(compiled)
        self.order = list(compiled.positiontup or self.names)

    def value(self, name: str, value: Any) -> Any:
        proc = self.procs[name]
        if value is None or proc is None:
            return value
        if self.dialect == "postgresql" and isinstance(value, (dict, list)):
            from psycopg.types.json import Jsonb
            text = json.dumps(value)
            return Jsonb(value, dumps=lambda _v, text=text: text)  # serialised once for every copy
        return proc(value)

    def native(self, row: dict[str, Any]) -> dict[str, Any]:
        return {n: self.value(n, row.get(n)) for n in self.names}


def load(engine: sa.Engine, rows: Iterator[tuple[str, dict[str, Any]]], natives: dict[str, Native]) -> dict[str, int]:
    """Insert the rows (already in driver terms) in batches per table: executemany on SQLite, COPY on PostgreSQL,
    one transaction per batch."""
    pending: dict[str, list[dict[str, Any]]] = {}
    counts: dict[str, int] = {}
    order = [t.name for t in db.metadata.sorted_tables]  # parents first

    def flush() -> None:
        with engine.begin() as conn:
            raw = conn.connection.driver_connection
            for name in sorted(pending, key=order.index):
                batch, native = pending[name], natives[name]
                if not batch:
                    continue
                if engine.dialect.name == "postgresql":
                    with raw.cursor() as cur, cur.copy(  # type: ignore[union-attr]
                            f"COPY {name} ({', '.join(native.names)}) FROM STDIN") as out:
                        for row in batch:
                            out.write_row([row[n] for n in native.names])
                else:
                    raw.executemany(native.sql, [[row[n] for n in native.order] for row in batch])  # type: ignore[union-attr]
                counts[name] = counts.get(name, 0) + len(batch)
                pending[name] = []

    for name, row in rows:
        pending.setdefault(name, []).append(row)
        if name == "decisions" and len(pending[name]) >= BATCH:
            flush()
    flush()
    return counts


def loader_engine(url: str) -> sa.Engine:
    engine = sa.create_engine(normalise_database_url(url))
    if engine.dialect.name == "sqlite":
        @sa.event.listens_for(engine, "connect")
        def fast(dbapi_conn: Any, _: Any) -> None:  # a bulk load: losing it to a crash costs nothing
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA synchronous=OFF")
            cur.execute("PRAGMA cache_size=-262144")
            cur.close()
    return engine


def fill(side: Side, templates: list[str], decisions: int, reviews: int, heavy: int, recent: int | None = None,
         recent_reviews: int = 0) -> None:
    started = time.perf_counter()
    engine = loader_engine(side.url)
    with side.app.app_context(), engine.connect() as conn:
        family = read_templates(conn, templates)
        heavy_subject = family[templates[0]]["decisions"][0]["subject_ref"]
        template_review = dict(conn.execute(sa.select(table(ReviewRequest))).mappings().one())
        tag = side.name[0]
    natives = {t.name: Native(t, engine.dialect) for t in db.metadata.sorted_tables}
    side.heavy_subject = heavy_subject
    with side.app.app_context():
        contact_key = current_settings().contact_key
    n = decisions - len(templates)
    recent = None if recent is None else min(max(recent - len(templates), 0), n)  # the templates are recent too
    copies = bulk_rows(family, natives, heavy_subject, n, heavy, tag, contact_key, recent)
    counts = load(engine, copies, natives)
    reviewed = [f"dec_{tag}{j:010d}" for j in range(n - reviews, n)]
    if recent is not None:  # the same reviewed decisions in the window on every side; the others before it
        older = n - recent
        reviewed = ([f"dec_{tag}{j:010d}" for j in range(max(older - (reviews - recent_reviews), 0), older)]
                    + [f"dec_{tag}{j:010d}" for j in range(n - recent_reviews, n)])
    counts |= load(engine, review_rows(template_review, natives["reviews"], reviewed, tag,
                                       30 if recent is None else 10), natives)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("ANALYZE")
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.commit()
        else:  # what autovacuum does to a table at rest: statistics, and the visibility map index-only scans need
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()
    side.load_seconds = round(time.perf_counter() - started, 1)
    with side.app.app_context():
        side.counts = {t: int(db.session.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one())
                       for t in ("decisions", "explanations", "notifications", "log_leaves", "idempotency_keys",
                                 "monitoring_values", "recourse", "reviews")}
        db.session.remove()


# --- measurements ----------------------------------------------------------------------------------------

def alternate(sides: list[Any], each: int, block: int, measure: Callable[[Any, int], float]) -> list[list[float]]:
    """`each` timings per side in alternating blocks (ABBA), so drift on the machine falls on both alike."""
    times: list[list[float]] = [[] for _ in sides]
    n, b = 0, 0
    while min(len(t) for t in times) < each:
        order = [0, 1] if (b // 2) % 2 == 0 else [1, 0]
        which = order[b % 2]
        for _ in range(block):
            if len(times[which]) < each:
                times[which].append(measure(sides[which], n))
                n += 1
        b += 1
    return times


def measure_decisions(small: Side, big: Side, rows: list[dict[str, Any]], each: int, block: int) -> dict[str, Any]:
    clients = {s.name: s.client for s in (small, big)}
    bodies = [decision_body(row, person(20_000 + i), i) for i, row in enumerate(rows[:200])]

    def decide(side: Side, n: int) -> float:
        body = copy.deepcopy(bodies[n % len(bodies)])
        headers = {**side.auth("agency_a"), "Idempotency-Key": f"measured-{n}"}
        t0 = time.perf_counter()
        resp = clients[side.name].post(f"/v1/models/{MODEL}/decisions", json=body, headers=headers)
        took = time.perf_counter() - t0
        assert resp.status_code == 201, resp.get_json()
        return took

    for side in (small, big):  # warm caches (model, explainer, keys) on both
        for i in range(20):
            decide(side, 1_000_000 + i + (100 if side is big else 0))
    times = alternate([small, big], each, block, decide)
    return {"small_p50_ms": ms(times[0]), "big_p50_ms": ms(times[1]), "ratio": ratio(ms(times[1]), ms(times[0])),
            "per_side": each}


def measure_claims(small: Side, big: Side, each: int, block: int) -> dict[str, Any]:
    clients = {s.name: s.client for s in (small, big)}

    def claim(side: Side, n: int) -> float:
        client = clients[side.name]
        t0 = time.perf_counter()
        resp = client.post("/v1/reviews/claim", json={}, headers=side.auth("reviewer"))
        took = time.perf_counter() - t0
        assert resp.status_code == 200, (resp.status_code, resp.data[:300])
        case = resp.get_json()
        review_id, token = case["review_id"], case["fencing_token"]
        back = client.post(f"/v1/reviews/{review_id}/release", json={"fencing_token": token},
                           headers=side.auth("reviewer"))
        assert back.status_code == 200, back.get_json()
        return took

    for side in (small, big):
        for i in range(5):
            claim(side, i)
    times = alternate([small, big], each, block, claim)
    return {"small_p50_ms": ms(times[0]), "big_p50_ms": ms(times[1]), "ratio": ratio(ms(times[1]), ms(times[0])),
            "per_side": each}


def page_cursor(side: Side, subject_ref: str, page: int, limit: int) -> str | None:
    """The `after` cursor that opens page `page` of the person's decisions (newest first), as next_after would."""
    if page <= 1:
        return None
    with side.app.app_context():
        row = db.session.execute(
            sa.select(Decision.created_at, Decision.id).where(Decision.subject_ref == subject_ref)
            .order_by(Decision.created_at.desc(), Decision.id).offset((page - 1) * limit - 1).limit(1)).one()
        db.session.remove()
    return keyset_cursor(row.created_at, row.id)


def queue_cursor(side: Side, page: int, limit: int) -> str | None:
    """The `after` cursor that opens page `page` of the review queue (every case, by due date), as next_after
    would."""
    if page <= 1:
        return None
    due = sa.func.coalesce(ReviewRequest.extended_until, ReviewRequest.due_at)
    with side.app.app_context():
        row = db.session.execute(
            sa.select(ReviewRequest).where(ReviewRequest.kind == "review")
            .order_by(due, ReviewRequest.requested_at, ReviewRequest.id).offset((page - 1) * limit - 1).limit(1)
        ).scalar_one()
        cursor = reviews.queue_cursor(row)
        db.session.remove()
    return cursor


def measure_pages(small: Side, big: Side, idp: IdentityProvider, page: int, limit: int, each: int,
                  block: int) -> dict[str, Any]:
    client = big.client
    citizen = {"Authorization": f"Bearer {idp.token(HEAVY_IIN, exp=int(time.time()) + 7200)}"}
    with big.app.app_context():
        subject = big.heavy_subject
        mine = db.session.execute(sa.select(sa.func.count()).where(Decision.subject_ref == subject)).scalar_one()
        queued = db.session.execute(sa.select(sa.func.count()).where(ReviewRequest.status == "queued")).scalar_one()
        db.session.remove()
    page = min(page, max(1, mine // limit))
    review_page = min(page, max(1, queued // limit))
    after = page_cursor(big, subject, page, limit)
    first_ids: dict[int, list[str]] = {}

    def mine_page(which: int, n: int) -> float:
        query: dict[str, Any] = {"limit": limit} | ({"after": after} if which == page and after else {})
        t0 = time.perf_counter()
        resp = client.get("/v1/me/decisions", headers=citizen, query_string=query)
        took = time.perf_counter() - t0
        assert resp.status_code == 200, resp.get_json()
        got = resp.get_json()["decisions"]
        assert len(got) == limit, len(got)
        first_ids.setdefault(which, [d["decision_id"] for d in got])
        return took

    times = alternate([1, page], each, block, mine_page)
    result: dict[str, Any] = {"my_decisions": {
        "person_decisions": mine, "limit": limit, "page": page, "paging": "keyset (after=)",
        "page_1_p50_ms": ms(times[0]), f"page_{page}_p50_ms": ms(times[1]),
        "ratio": ratio(ms(times[1]), ms(times[0])), "per_side": each}}

    review_after = queue_cursor(big, review_page, limit)
    totals: dict[str, Any] = {}

    def review_list(which: int, n: int) -> float:
        query: dict[str, Any] = {"limit": limit} | ({"after": review_after} if which == review_page and review_after else {})
        t0 = time.perf_counter()
        resp = client.get("/v1/reviews", headers=big.auth("reviewer"), query_string=query)
        took = time.perf_counter() - t0
        body = resp.get_json()
        assert resp.status_code == 200 and len(body["reviews"]) == limit, resp.status_code
        totals.setdefault("big", {k: body[k] for k in ("total", "total_is_lower_bound", "overdue_total",
                                                       "overdue_total_is_lower_bound")})
        return took

    times = alternate([1, review_page], each, block, review_list)
    clients = {s.name: s.client for s in (small, big)}

    def first_page(side: Side, n: int) -> float:
        t0 = time.perf_counter()
        resp = clients[side.name].get("/v1/reviews", headers=side.auth("reviewer"), query_string={"limit": limit})
        took = time.perf_counter() - t0
        assert resp.status_code == 200 and len(resp.get_json()["reviews"]) == limit, resp.status_code
        return took

    sizes = alternate([small, big], each, block, first_page)
    result["reviews_list"] = {
        "queued": queued, "limit": limit, "page": review_page, "paging": "keyset (after=)",
        "page_1_p50_ms": ms(times[0]), f"page_{review_page}_p50_ms": ms(times[1]),
        "ratio": ratio(ms(times[1]), ms(times[0])), "per_side": each,
        "page_1_small_p50_ms": ms(sizes[0]), "page_1_big_p50_ms": ms(sizes[1]),
        "big_over_small": ratio(ms(sizes[1]), ms(sizes[0])), "totals_on_big": totals.get("big"),
        "list_count_cap": big.app.config["LIST_COUNT_CAP"]}
    return result


def sequence(side: Side) -> None:
    """Give every bulk leaf its index in the log, as the sequencer keeps it in a deployment (untimed)."""
    started = time.perf_counter()
    with side.app.app_context():
        signer = store.signer(side.app.config)
        while True:
            with write_transaction() as session:
                done = store.append(session, "bench", dt.datetime.now(dt.UTC), limit=50_000, signer_=signer,
                                    checkpoint_every_s=float(side.app.config["LOG_CHECKPOINT_INTERVAL_S"]))
            if not done:
                break
        db.session.remove()
    engine = loader_engine(side.url)  # fresh statistics, as autovacuum would gather after the indices were given
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("ANALYZE")
            conn.commit()
        else:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()
    say(f"[{side.name}] log sequenced in {time.perf_counter() - started:.1f} s")


def measure_metrics(small: Side, big: Side, each: int, rows: list[dict[str, Any]], refreshes: int) -> dict[str, Any]:
    """The cached scrape, and what a refresh computes: the first one (it closes the stored history into the
    rollups, once per database), then refreshes with a new decision recorded before each (steady state)."""
    clients = {s.name: s.client for s in (small, big)}

    def scrape(side: Side, n: int) -> float:
        t0 = time.perf_counter()
        resp = clients[side.name].get("/metrics", headers=side.auth("metrics"))
        took = time.perf_counter() - t0
        assert resp.status_code == 200
        return took

    def compute(side: Side, n: int) -> float:
        registry = side.app.extensions["gateway.metrics"]
        t0 = time.perf_counter()
        generate_latest(registry)
        return time.perf_counter() - t0

    def compute_after_a_decision(side: Side, n: int) -> float:
        resp = clients[side.name].post(f"/v1/models/{MODEL}/decisions", json=decision_body(rows[n % len(rows)],
                                       person(50_000 + n), n), headers={**side.auth("agency_a"),
                                                                        "Idempotency-Key": f"metrics-{n}"})
        assert resp.status_code == 201, resp.get_json()
        return compute(side, n)

    first = {side.name: round(compute(side, 0) * 1000, 3) for side in (small, big)}
    for side in (small, big):
        scrape(side, 0)
    cached = alternate([small, big], each, 10, scrape)
    few = refreshes
    computed = alternate([small, big], few, 1, compute_after_a_decision)
    return {
        "scrape_cached": {"small_p50_ms": ms(cached[0]), "big_p50_ms": ms(cached[1]),
                          "ratio": ratio(ms(cached[1]), ms(cached[0])), "per_side": each},
        "first_refresh_ms": first,
        "refresh_computation": {"small_p50_ms": ms(computed[0]), "big_p50_ms": ms(computed[1]),
                                "ratio": ratio(ms(computed[1]), ms(computed[0])), "per_side": few,
                                "each_after": "one more decision recorded through the app (untimed)",
                                "max_age_s": big.app.config["METRICS_MAX_AGE_S"]},
    }


# --- a backend ---------------------------------------------------------------------------------------------

def postgres_databases(url: str) -> tuple[Callable[[str], str], Callable[[], None]]:
    admin = sa.make_url(normalise_database_url(url))
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    made: list[str] = []

    def create(name: str) -> str:
        full = f"gw_scale_{name}_{uuid.uuid4().hex[:8]}"
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{full}"')
        made.append(full)
        return admin.set(database=full).render_as_string(hide_password=False)

    def drop() -> None:
        with engine.connect() as conn:
            for name in made:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        engine.dispose()

    return create, drop


def run_backend(backend: str, args: argparse.Namespace, folder: Path, manifest: Path, idp: IdentityProvider,
                rows: list[dict[str, Any]]) -> dict[str, Any]:
    drop: Callable[[], None] = lambda: None  # noqa: E731
    if backend == "sqlite":
        def url_for(name: str) -> str:
            return f"sqlite:///{folder / backend / name / 'gateway.db'}"
    else:
        url_for, drop = postgres_databases(args.postgres_url)
    sides: list[Side] = []
    try:
        heavy = min(args.page * args.limit + args.limit, args.scale // 10)
        for name, decisions, reviews in (("small", args.small, args.small_reviews), ("big", args.scale, args.reviews)):
            say(f"[{backend}] {name}: schema, model, keys")
            side = make_side(name, url_for(name), folder / backend / name, manifest, idp, args.list_count_cap)
            sides.append(side)
            templates = post_templates(side, rows, args.templates)
            say(f"[{backend}] {name}: bulk load to {decisions} decisions, {reviews} queued reviews")
            fill(side, templates, decisions, reviews, heavy if name == "big" else 0, args.recent,
                 min(args.small_reviews, args.recent or 0))
            if args.recent is not None:
                sequence(side)
            say(f"[{backend}] {name}: loaded in {side.load_seconds} s: {side.counts}")
        small, big = sides
        found: dict[str, Any] = {"rows": {"small": small.counts, "big": big.counts},
                                 "load_seconds": {"small": small.load_seconds, "big": big.load_seconds}}
        if "decision" in args.only:
            say(f"[{backend}] decisions")
            found["decision"] = measure_decisions(small, big, rows, args.decisions, args.block)
            say(f"[{backend}] {found['decision']}")
        if "claim" in args.only:
            say(f"[{backend}] review claims")
            found["review_claim"] = measure_claims(small, big, args.claims, args.block)
            say(f"[{backend}] {found['review_claim']}")
        if "pages" in args.only:
            say(f"[{backend}] pages")
            found |= measure_pages(small, big, idp, args.page, args.limit, args.pages, args.block)
            say(f"[{backend}] {found['my_decisions']} {found['reviews_list']}")
        if "metrics" in args.only:
            say(f"[{backend}] metrics")
            found["metrics"] = measure_metrics(small, big, args.scrapes, rows, args.refreshes)
            say(f"[{backend}] {found['metrics']}")
        return found
    finally:
        for side in sides:
            with side.app.app_context():
                db.engine.dispose()
        drop()


def targets(result: dict[str, Any]) -> dict[str, Any]:
    met: dict[str, bool] = {}
    if "decision" in result:
        met["decision"] = result["decision"]["ratio"] <= 1.2
    if "review_claim" in result:
        met["review_claim"] = result["review_claim"]["ratio"] <= 1.2
    if "my_decisions" in result:
        met["my_decisions_pages"] = result["my_decisions"]["ratio"] <= 1.2
        met["reviews_list_pages"] = result["reviews_list"]["ratio"] <= 1.2
        met["reviews_list_big_over_small"] = result["reviews_list"]["big_over_small"] <= 1.2
    if "metrics" in result:
        met["metrics_scrape"] = result["metrics"]["scrape_cached"]["ratio"] <= 1.2
        met["metrics_refresh"] = result["metrics"]["refresh_computation"]["ratio"] <= 1.2
    return {"decision_ratio_max": 1.2, "review_claim_ratio_max": 1.2, "page_ratio_max": 1.2, "metrics_ratio_max": 1.2,
            "met": met}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=1_000_000, help="decisions in the big database")
    parser.add_argument("--reviews", type=int, default=None, help="queued reviews in the big database (scale/10)")
    parser.add_argument("--small", type=int, default=1_000, help="decisions in the small database")
    parser.add_argument("--small-reviews", type=int, default=100)
    parser.add_argument("--templates", type=int, default=40, help="real decisions the bulk rows are copied from")
    parser.add_argument("--decisions", type=int, default=300, help="measured decisions per database")
    parser.add_argument("--claims", type=int, default=150, help="measured claims per database")
    parser.add_argument("--pages", type=int, default=100, help="measured page reads per page")
    parser.add_argument("--scrapes", type=int, default=100, help="measured /metrics scrapes per database")
    parser.add_argument("--refreshes", type=int, default=15, help="measured /metrics refreshes per database")
    parser.add_argument("--block", type=int, default=20)
    parser.add_argument("--page", type=int, default=1000, help="the deep page compared with page 1")
    parser.add_argument("--limit", type=int, default=20, help="page size")
    parser.add_argument("--postgres-url", default=os.environ.get("GATEWAY_TEST_POSTGRES_URL"))
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--keep", type=Path, default=None, help="build the SQLite databases in this folder, kept")
    parser.add_argument("--list-count-cap", type=int, default=None,
                        help="GATEWAY_LIST_COUNT_CAP of both apps (default: the app's, 10,000)")
    parser.add_argument("--only", action="append", choices=FIGURES, default=None,
                        help="measure only these figures (repeatable; default: all)")
    parser.add_argument("--recent", type=int, default=None,
                        help="the same N decisions in the last 29 days of both databases, the others over 300 days "
                             "before, the log sequenced: the /metrics comparison (what differs is only what is stored)")
    parser.add_argument("--metrics-only", action="store_true", help="measure /metrics only (as --only metrics)")
    args = parser.parse_args()
    args.only = ("metrics",) if args.metrics_only else tuple(args.only or FIGURES)
    args.reviews = args.scale // 10 if args.reviews is None else args.reviews
    started = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "record_scale", "when": NOW.isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average_before": os.getloadavg()},
        "command": " ".join(["python", "bench/record_scale.py", *sys.argv[1:]]),
        "figures": list(args.only),
        "scale": {"big_decisions": args.scale, "small_decisions": args.small, "big_queued_reviews": args.reviews,
                  "small_queued_reviews": args.small_reviews, "recent_decisions_both": args.recent},
    }
    with tempfile.TemporaryDirectory(prefix="record-scale-") as tmp:
        folder = args.keep or Path(tmp)
        say("training the example model")
        manifest = load_train_module().train(folder / "model", verbose=False)
        rows = example_rows(manifest)
        idp = IdentityProvider.create(folder)
        backends = ([] if args.no_sqlite else ["sqlite"]) + (["postgresql"] if args.postgres_url else [])
        for backend in backends:
            found = run_backend(backend, args, folder, manifest, idp, rows)
            result[backend] = found | {"targets": targets(found)}
    result["machine"]["load_average_after"] = os.getloadavg()
    result["seconds"] = round(time.perf_counter() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.output.with_suffix(".tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    tmp_out.replace(args.output)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
