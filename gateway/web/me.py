"""A person signed in through the identity provider: all their decisions, open reviews, one download.

| route            | page                                                                                  |
|------------------|---------------------------------------------------------------------------------------|
| GET /me[?after=] | `table#my-decisions` (newest first, keyset pages, `a#next-page`), `#open-reviews`, `a#download` |
| GET /me/data.json | everything held about the person (decisions, reviews), a JSON attachment              |

Each decision links to its decision page (/d/{id}) through a fresh personal link, which starts the
person's session for that decision as the link in the notice does.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from flask import Blueprint, Response, render_template, request

from gateway import access, links, records
from gateway.auth import capability_token
from gateway.presenters.decision import decision_view
from gateway.presenters.review import summary
from gateway.web import labels, staff
from gateway.web.common import choose_language

bp = Blueprint("me", __name__)
PAGE = 20


@bp.before_request
def _people_only() -> None:
    choose_language()
    staff.person()


def _after() -> records.Cursor | None:
    at, sep, last = (request.args.get("after") or "").partition("~")
    if not sep:
        return None
    try:
        return dt.datetime.fromisoformat(at), last
    except ValueError:
        return None


@bp.get("/me")
def mine() -> Any:
    citizen = staff.person()
    rows, more = records.my_decisions(citizen, after=_after(), limit=PAGE)
    open_reviews = [summary(r).model_dump(mode="json") for r in records.my_open_reviews(citizen)]
    items = [{"row": r, "link": links.personal_link("", r.id, capability_token(r.id, r.subject_ref))} for r in rows]
    next_after = f"{rows[-1].created_at.isoformat()}~{rows[-1].id}" if more else None
    return render_template("web/me.html", items=items, open_reviews=open_reviews, next_after=next_after,
                           first=_after() is None, labels=labels)


@bp.get("/me/data.json")
def data() -> Response:
    citizen = staff.person()
    decisions = []
    for row in records.all_my_decisions(citizen):
        view = decision_view(citizen, row.id).model_dump(mode="json", exclude_unset=True)
        view["links"] = {k: v for k, v in view["links"].items() if k != "citizen"}  # no live credential in the file
        reviews = []
        for item in view["reviews"]:
            review = access.visible_review(citizen, item["review_id"])
            reviews.append(item | {"point_of_view": review.point_of_view, "corrected_data": review.corrected_data})
        view["reviews"] = reviews
        decisions.append(view)
        access.record_access(citizen, row.id, "data_export")
    body = {"decisions": decisions}
    resp = Response(json.dumps(body, ensure_ascii=False, indent=2), mimetype="application/json")
    resp.headers["Content-Disposition"] = 'attachment; filename="my-decisions.json"'
    return resp
