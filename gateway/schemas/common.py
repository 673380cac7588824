"""Types and models every resource shares: languages, feature values, paths, links, errors, paging."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from gateway.ids import CURSOR_PATTERN
from gateway.manifest import INTEGRAL
from gateway.text import LINE_PATTERN, TEXT_PATTERN

Language = Literal["kk", "ru", "en"]


# Free text that is stored and shown: no control characters (a NUL cannot even be stored in PostgreSQL; a
# CR/LF ends a header). A Line is one line (names, references); a Text may hold line breaks and tabs (a point
# of view, reasons). The rule is a pattern of the string itself, so that bounds given where a type is used,
# Annotated[Line, Field(max_length=…)], keep their usual rule names (string_too_short…) and the document
# states it. Lone surrogates are refused by the string validation itself (string_unicode).
Line = Annotated[str, Field(pattern=LINE_PATTERN)]
Text = Annotated[str, Field(pattern=TEXT_PATTERN)]


# The official who operated a decision, by the identity the gateway records for them: a reviewer's or auditor's
# API client id, or "oidc:<subject>" of an official who signed in through the OpenID provider. Which ones exist
# is the gateway's state: one it does not know is refused (422 naming the field).
OperatorId = Annotated[str, Field(min_length=5, max_length=100, pattern=r"^(cli_[A-Za-z0-9_-]{1,96}|oidc:[!-~]{1,95})$",
                                  description="The official who operated the system, as the gateway records them: the "
                                  "API client id of a reviewer or auditor (cli_…), or oidc:<subject> of an official "
                                  "who has signed in through the identity provider. A reviewer never gets a case "
                                  "whose decision they operated.")]


FeatureValue = StrictBool | StrictInt | StrictFloat | Annotated[StrictStr, Field(max_length=200)]


FencingToken = Annotated[int, Field(ge=1, le=2**31 - 1), INTEGRAL]


# The schema states the default lease limit (REVIEW_MAX_LEASE_SECONDS); a deployment may lower it (422).
LeaseSeconds = Annotated[int, Field(ge=30, le=3600), INTEGRAL]


class Strict(BaseModel):
    """A request model: unknown fields refused, no coercion (JSON false is not 0.0)."""

    model_config = ConfigDict(extra="forbid", strict=True)


# The size of a listed set: counted exactly up to LIST_COUNT_CAP (10,000 by default), so a page costs the same
# whatever the size of the table; beyond the cap the count is the cap and its `…_is_lower_bound` flag is true.
ListTotal = Annotated[int, Field(ge=0, description="How many items the list holds: exact up to the server's "
                                                   "LIST_COUNT_CAP (10,000 by default); the cap itself when there "
                                                   "are more (then total_is_lower_bound is true)")]
LowerBound = Annotated[bool, Field(description="true: the list holds more items than `total` says (counting "
                                               "stopped at LIST_COUNT_CAP); false: `total` is exact")]


class Out(BaseModel):
    """A response model: presenters build it, so a field that is served but not documented fails at once."""

    model_config = ConfigDict(extra="forbid")


class ModelRef(Out):
    name: str
    version: str
    sha256: str


class DecisionLinks(Out):
    decision: str
    explanation: str
    review: str
    citizen: str | None = Field(
        default=None,
        description="The person's capability link (…/d/{id}?token=…): shown to the person only (it reaches them "
        "through the notice); an agency that must hand a link on makes a handover link",
    )


class PageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=50, ge=1, le=100, description="Page size (at most 100)")
    offset: int = Field(default=0, ge=0, le=1_000_000)


KEYSET_CURSOR = r"^[0-9]{1,16}\.[A-Za-z0-9_-]{1,60}$"


class KeysetPageQuery(PageQuery):
    """A page of a list that grows: by keyset (`after`, the previous page's `next_after`), or by offset."""

    after: Annotated[str, Field(pattern=KEYSET_CURSOR, max_length=80)] | None = Field(
        default=None, description="Items after this one: the previous page's next_after (keyset paging; its cost "
                                  "does not grow with the page number, unlike offset)")


# The opaque cursor of the lists that page by keyset with it (gateway.ids.encode_cursor).
Cursor = Annotated[str, Field(pattern=CURSOR_PATTERN, max_length=400,
                              description="Items after this one: the previous page's next_after, unchanged (keyset "
                                          "paging: a page costs the same however deep; stable under inserts)")]


class ModelPath(Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$", max_length=100)]


class DecisionPath(Strict):
    decision_id: Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class BlobPath(Strict):
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class ErrorDetail(Out):
    code: str
    message: str
    details: Any = None


class ErrorResponse(Out):
    error: ErrorDetail


class Health(Out):
    status: str
    checks: dict[str, Any] = {}


ReviewId = Annotated[str, Field(max_length=64, pattern=r"^rev_[A-Za-z0-9_-]{1,60}$")]


class ReviewPath(Strict):
    review_id: ReviewId
