"""The parts of the OpenAPI description (:mod:`userdata.openapi`): its named schemas, parameters
and answers, and the helpers that write them."""

from __future__ import annotations

from typing import Any

from .health import REJECTED_SHOWN
from .views import MAX_LIMIT

__all__ = (
    "FILTERS",
    "LINK",
    "PARAMETERS",
    "RESPONSES",
    "SCHEMAS",
    "WHITE_SPACE",
    "Schema",
    "closed",
    "header",
    "json_answer",
    "loose",
    "operation",
    "ref",
    "string",
    "text_answer",
)

Schema = dict[str, Any]


def ref(name: str, kind: str = "schemas") -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def closed(properties: dict[str, Schema], required: tuple[str, ...] | None = None, **extra: Any) -> Schema:
    """A closed object: every property named, all required unless ``required`` says which."""
    needed = list(properties) if required is None else list(required)
    return {"type": "object", "properties": properties, "required": needed, "additionalProperties": False} | extra


def loose(properties: dict[str, Schema], **extra: Any) -> Schema:
    """An object with these properties, all required, and any others besides."""
    return closed(properties, additionalProperties=True, **extra)


def string(description: str, **extra: Any) -> Schema:
    return {"type": "string", "description": description} | extra


def header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


def count(description: str) -> Schema:
    return {"type": "integer", "minimum": 0, "description": description}


def status(value: str, description: str) -> Schema:
    return closed({"status": {"const": value}}, description=description)


def json_answer(schema: Schema, description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = {"description": description, "content": {"application/json": {"schema": schema}}}
    return answer | ({"headers": headers} if headers else {})


def text_answer(description: str, *media_types: str) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": {"type": "string"}} for media in media_types}}


def operation(operation_id: str, summary: str, responses: dict[str, Any], *params: str, **extra: Any) -> dict[str, Any]:
    """An operation; ``params`` name its parameters in ``PARAMETERS``."""
    operation = {"operationId": operation_id, "summary": summary, "responses": responses}
    return operation | ({"parameters": [ref(name, "parameters") for name in params]} if params else {}) | extra


def query(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


#: What str.strip() removes (str.isspace), as the handlers trim every value; JSON Schema's \s differs.
WHITE_SPACE = r"\t\n\v\f\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# An empty value (once trimmed) is a bad request.
_NOT_BLANK = {"type": "string", "pattern": f"[^{WHITE_SPACE}]", "title": "not blank"}


def _any_case(*words: str) -> Schema:
    """One of ``words`` in any case, white space around it allowed: what the handler takes."""
    cased = ("".join(f"[{c.upper()}{c}]" if c.isalpha() else c for c in word) for word in words)
    pattern = f"^[{WHITE_SPACE}]*({'|'.join(cased)})[{WHITE_SPACE}]*$"
    return {"type": "string", "pattern": pattern, "title": "any case", "examples": list(words)}


_AGE = {"type": "number", "minimum": 0}
_LIMIT = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}
LINK = {"Link": header('The next page, unless this is the last: `</path?...&after=...>; rel="next"`, same query.')}
FILTERS = ("is_image_exists", "min_age", "max_age")

_S3_KEYS = loose({"bucket": loose({"name": {"type": "string"}}), "object": loose({"key": string("URL-encoded.")})})
_S3_EVENT = loose(
    {"Records": {"type": "array", "items": loose({"s3": _S3_KEYS})}},
    description="A MinIO (S3) bucket notification; other fields are ignored, as are other buckets' records.",
)
_CHANGED_AT = {
    "type": ["string", "null"],
    "format": "date-time",
    "description": "When the index last changed, UTC to the millisecond (`2026-12-01T17:00:00.123Z`); null if it "
    "has not since the service started (a first load that found users counts).",
}
_FIRST = f"The first {REJECTED_SHOWN} rejected files by key; GET /rejected has them all."

SCHEMAS: dict[str, Schema] = {
    "Record": closed(
        {
            "user_id": {"type": "string", "minLength": 1, "description": "The CSV's name without `.csv`."},
            "first_name": {"type": "string", "minLength": 1},
            "last_name": {"type": "string", "minLength": 1},
            "birthts": {
                "type": "integer",
                "description": "Birth time in ms since the epoch, UTC; negative before 1970.",
            },
            "img_path": {"type": ["string", "null"], "description": "The image's key, or null when there is none."},
        },
        description="A user, as /data and output.csv give it.",
    ),
    "Stats": closed(
        {
            "count": count("Users matching the filters."),
            "average_age": {
                "type": ["number", "null"],
                "description": "Mean exact age (years of 365.2425 days); null if none.",
            },
        },
        description="Count and average age of the matching users.",
    ),
    "RescanReport": closed(
        {
            "users": count("Users in the index now."),
            "added": count("Users this rescan added."),
            "updated": count("Users this rescan changed."),
            "removed": count("Users this rescan removed."),
            "rejected": count("Files rejected now."),
            "duration_ms": count("How long the rescan took."),
        },
        description="What a forced rescan found.",
    ),
    "Rejected": closed(
        {"key": {"type": "string"}, "reason": string("Why, in one line.")},
        description="A rejected source file.",
    ),
    "RejectedPage": closed(
        {
            "rejected": {"type": "array", "items": ref("Rejected"), "maxItems": MAX_LIMIT},
            "count": count("Rejected files in all."),
        },
        description="A page of rejected files in key order.",
    ),
    "Mirror": closed(
        {
            "status": {"enum": ["ok", "degraded"]},
            "lag_s": {
                "type": "number",
                "minimum": 0,
                "description": "Seconds since the oldest change not in the table.",
            },
            "pending": count("Users waiting to be written."),
        },
        description="The PostgreSQL mirror, when one is configured.",
    ),
    "Health": closed(
        {
            "status": {"enum": ["ok", "degraded"]},
            "cause": string("Every cause of a degraded status; only then present."),
            "users": count("Users in the index."),
            "changed_at": _CHANGED_AT,
            "rejected": {"type": "array", "items": ref("Rejected"), "maxItems": REJECTED_SHOWN, "description": _FIRST},
            "rejected_count": count("Rejected files in all."),
            "store": string("Where the source objects are read from."),
            "mirror": ref("Mirror"),
            "role": {
                "enum": ["writer", "reader"],
                "description": "With a database: whether this replica writes; reader too with --read-only.",
            },
            "epoch": {
                "type": ["integer", "null"],
                "description": "With a database: the fencing counter's value of this writer's term; null on a reader.",
            },
            "events": loose(
                {"stream": {"type": "string"}, "lag": {"type": ["integer", "null"]}},
                description="The JetStream feed, with --nats-url: stream, subject, position, stream_last, lag.",
            ),
        },
        required=("status", "users", "changed_at", "rejected", "rejected_count", "store"),
        description="The health of a service that has done its first load; degraded while the last index is served.",
    ),
    "Starting": {
        "oneOf": [
            status("starting", "The first load is not done yet."),
            closed(
                {"status": {"const": "degraded"}, "cause": {"type": "string"}},
                description="The first load is not done, and something fails meanwhile.",
            ),
        ],
        "description": "The health of a service still doing its first load.",
    },
    "Alive": status("alive", "The process serves."),
    "Stopped": closed(
        {"status": {"const": "stopped"}, "cause": string("The task that died.")},
        description="A background task has died; only a restart mends it.",
    ),
    "Ready": status("ready", "The first load is done."),
    "NotReady": {
        "oneOf": [
            status("starting", "The first load is not done yet."),
            closed(
                {"status": {"const": "catching up"}, "lag": {"type": ["integer", "null"]}},
                description="Loaded, and fed by JetStream: more events wait than READY_LAG (null: no position yet).",
            ),
        ]
    },
    "EventsAnswer": closed({"keys": count("Keys of this bucket and prefix it named.")}, description="An event taken."),
    "S3Event": _S3_EVENT,
    "AgeCount": closed(
        {"age": {"type": "integer", "description": "Completed years."}, "count": count("Users of that age.")},
        description="The matching users of one age.",
    ),
    "AgeCounts": closed(
        {"ages": {"type": "array", "items": ref("AgeCount")}},
        description="One entry per age from the youngest to the oldest matching user, zero counts included "
        "between them; empty when no user matches.",
    ),
    "State": closed(
        {
            "version": count("The index's version: it grows with every change (the event's id)."),
            "users": count("Users in the index."),
            "with_image": count("Users with an image."),
            "rejected": count("Rejected files in all."),
            "status": {"enum": ["ok", "degraded", "starting"], "description": "As /health says it."},
            "cause": {"type": ["string", "null"], "description": "Every cause of a degraded status, else null."},
            "changed_at": _CHANGED_AT,
        },
        description="What each `state` event of /updates holds (its `data`, one line of JSON).",
    ),
    "Error": closed({"error": string("What is wrong, naming it.", minLength=1)}, description="Every error's body."),
}

PARAMETERS: dict[str, dict[str, Any]] = {
    "is_image_exists": query(
        "is_image_exists",
        # A pattern, not an enum: TRUE is no bad value.
        _any_case("true", "false", "yes", "no", "1", "0"),
        "Only users with (true) or without (false) an image; any case, also 1/0 and yes/no.",
    ),
    "min_age": query("min_age", _AGE, "Only users at least this old, in completed years (30.5 acts as 31)."),
    "max_age": query("max_age", _AGE, "Only users at most this old (30.5 acts as 30); not below min_age."),
    "limit": query("limit", _LIMIT, "Records per page; the whole answer without."),
    "after": query("after", _NOT_BLANK, "The page after this user_id in the sort order; needs limit."),
    "format": query(
        "format",
        _any_case("json", "csv"),
        "json or csv (any case); without it, the Accept header decides (JSON unless text/csv is preferred).",
    ),
    "rejected_limit": query("limit", _LIMIT | {"default": REJECTED_SHOWN}, "Rejected files per page."),
    "rejected_after": query("after", _NOT_BLANK, "The page after this key."),
    "user_id": {
        "name": "user_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
        "description": "The user's id (URL-encoded); only looked up in the index, never part of a key.",
    },
}

RESPONSES = {
    "BadRequest": json_answer(ref("Error"), "A bad parameter: unknown, given twice, empty, invalid or out of range."),
    "NotFound": json_answer(ref("Error"), "No such path (or the webhook is off)."),
    "Unavailable": json_answer(ref("Error"), "The store cannot be read."),
    "NotLoaded": json_answer(
        ref("Error"),
        "A replica fed by JetStream (--nats-url) whose first load is not done yet "
        "(with Retry-After: 1): another replica answers behind a load balancer.",
    ),
}
