"""``GET /openapi.json`` and ``GET /docs``: the description, and a page for people rendered from it
on the server (no script, nothing fetched from elsewhere: it works offline)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from html import escape
from typing import Any

import orjson
from aiohttp import web

from .openapi import DOCUMENT

__all__ = ("operations", "render", "resolve", "routes", "schema_html")

routes = web.RouteTableDef()

_METHODS = ("get", "head", "post", "put", "patch", "delete", "options")
_CODE = re.compile(r"`([^`]+)`")

_STYLE = """
:root { color-scheme: light dark; --fg: #1d2125; --muted: #5b636b; --bg: #fff; --panel: #f5f6f8;
  --line: #dde1e5; --link: #0b5cad; --get: #1f7a3f; --post: #9a5b00; }
@media (prefers-color-scheme: dark) { :root { --fg: #e4e7ea; --muted: #9aa3ab; --bg: #15181b;
  --panel: #1e2226; --line: #30363c; --link: #7db4f0; --get: #6cc98c; --post: #f0b15c; } }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 58rem; padding: 1rem; font: 16px/1.5 system-ui, sans-serif;
  color: var(--fg); background: var(--bg); }
a { color: var(--link); }
code { font: 0.9em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; overflow-wrap: anywhere; }
h1 { margin: 0.5rem 0 0; } h2 { margin-top: 2.5rem; } h3 { margin-bottom: 0.25rem; font-size: 1rem; }
.muted { color: var(--muted); }
nav ul { padding-left: 1.2rem; }
section { border-top: 1px solid var(--line); padding-top: 0.5rem; }
.method { display: inline-block; min-width: 3.6rem; font: bold 0.8em ui-monospace, monospace; color: var(--get); }
.method.post { color: var(--post); }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 0.95em; }
th, td { text-align: left; vertical-align: top; padding: 0.35rem 0.5rem; border-bottom: 1px solid var(--line); }
th { background: var(--panel); font-weight: 600; }
dl.responses dt { margin-top: 0.5rem; font-weight: 600; }
dl.responses dd { margin-left: 1.2rem; }
ul.fields { margin: 0.2rem 0; padding-left: 1.2rem; }
"""


def _text(text: str) -> str:
    """Plain text with `code` spans, for HTML."""
    return _CODE.sub(r"<code>\1</code>", escape(text))


def _anchor(method: str, path: str) -> str:
    return f"{method}-{re.sub(r'[^a-z0-9]+', '-', path.lower()).strip('-') or 'root'}"


def resolve(document: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """``item`` with its ``$ref`` followed (references within the document only)."""
    while "$ref" in item:
        node: Any = document
        for part in item["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        item = node
    return item


def schema_html(schema: dict[str, Any]) -> str:
    """A schema in a few words: its type, bounds and values, named schemas as links."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#schema-{escape(name)}">{escape(name)}</a>'
    if "const" in schema:
        return _value(schema["const"])
    if "enum" in schema:
        return " | ".join(map(_value, schema["enum"]))
    if "oneOf" in schema:
        return "one of:" + _list(schema_html(option) for option in schema["oneOf"])
    kinds = schema.get("type", "any")
    if kinds == "array":
        words = [f"array of {schema_html(schema.get('items', {}))}"]
    else:
        words = [" or ".join(kinds) if isinstance(kinds, list) else kinds]
    text = ", ".join(words + _bounds(schema))
    if "properties" in schema:
        text += _fields(schema)
    return text


def _value(value: Any) -> str:
    return f"<code>{escape(orjson.dumps(value).decode())}</code>"


def _list(items: Iterable[str]) -> str:
    return '<ul class="fields">' + "".join(f"<li>{item}</li>" for item in items) + "</ul>"


def _about(item: dict[str, Any]) -> str:
    return f" — {_text(item['description'])}" if item.get("description") else ""


def _bounds(schema: dict[str, Any]) -> list[str]:
    """What a schema allows of its type's values, in words."""
    words = []
    if "maxItems" in schema:
        words.append(f"at most {schema['maxItems']}")
    if "minimum" in schema and "maximum" in schema:
        words.append(f"{schema['minimum']} to {schema['maximum']}")
    elif "minimum" in schema:
        words.append(f"&ge; {schema['minimum']}")
    if "minLength" in schema:
        words.append("not empty")
    if "pattern" in schema:  # its title says it for people, when it has one
        words.append(
            escape(schema["title"]) if "title" in schema else f"matching <code>{escape(schema['pattern'])}</code>"
        )
    if "examples" in schema:
        words.append("e.g. " + ", ".join(map(_value, schema["examples"])))
    if "default" in schema:
        words.append(f"default {escape(str(schema['default']))}")
    return words


def _fields(schema: dict[str, Any]) -> str:
    """An inline object's properties as a list."""
    required = set(schema.get("required", ()))
    return _list(
        f"<code>{escape(name)}</code>{'' if name in required else ' (optional)'}: {schema_html(sub)}{_about(sub)}"
        for name, sub in schema["properties"].items()
    )


def _properties(schema: dict[str, Any]) -> str:
    """A named object schema's properties as a table."""
    required = set(schema.get("required", ()))
    rows = "".join(
        f"<tr><td><code>{escape(name)}</code>{'' if name in required else ' <span class=muted>optional</span>'}"
        f"</td><td>{schema_html(sub)}</td><td>{_text(sub.get('description', ''))}</td></tr>"
        for name, sub in schema["properties"].items()
    )
    more = "" if schema.get("additionalProperties") is False else "<p class=muted>Other fields may appear.</p>"
    head = "<tr><th>field</th><th>type</th><th>meaning</th></tr>"
    return f'<div class="scroll"><table>{head}{rows}</table></div>{more}'


def _parameters(document: dict[str, Any], operation: dict[str, Any]) -> str:
    params = [resolve(document, p) for p in operation.get("parameters", ())]
    if not params:
        return ""
    rows = "".join(
        f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p['in'])}</td>"
        f"<td>{schema_html(p.get('schema', {}))}</td><td>{_text(p.get('description', ''))}</td></tr>"
        for p in params
    )
    head = "<tr><th>name</th><th>in</th><th>type</th><th>meaning</th></tr>"
    return f'<h3>Parameters</h3><div class="scroll"><table>{head}{rows}</table></div>'


def _content(content: dict[str, Any]) -> list[str]:
    schemas = ((media, body.get("schema", {})) for media, body in content.items())
    return [f"<code>{escape(media)}</code>: {schema_html(s)}{'' if '$ref' in s else _about(s)}" for media, s in schemas]


def _responses(document: dict[str, Any], operation: dict[str, Any]) -> str:
    items = []
    for status, answer in operation["responses"].items():
        answer = resolve(document, answer)
        headers = [
            f"header <code>{escape(name)}</code>: {schema_html(header['schema'])}{_about(header)}"
            for name, header in answer.get("headers", {}).items()
        ]
        body = _list(_content(answer.get("content", {})) + headers)
        items.append(f"<dt>{escape(status)}</dt><dd>{_text(answer['description'])}{body}</dd>")
    return f'<h3>Responses</h3><dl class="responses">{"".join(items)}</dl>'


def _operation(document: dict[str, Any], method: str, path: str, operation: dict[str, Any]) -> str:
    parts = [
        f'<section id="{_anchor(method, path)}"><h2>{_method(method)} '
        f"<code>{escape(path)}</code></h2><p>{_text(operation.get('summary', ''))}</p>"
    ]
    if "description" in operation:
        parts.append(f"<p>{_text(operation['description'])}</p>")
    if "security" in operation:
        parts.append("<p>Needs <code>Authorization: Bearer &lt;token&gt;</code>.</p>")
    parts.append(_parameters(document, operation))
    if "requestBody" in operation:
        parts.append(f"<h3>Request body</h3>{_list(_content(operation['requestBody']['content']))}")
    parts.append(_responses(document, operation))
    return "".join(parts) + "</section>"


def _schema_section(name: str, schema: dict[str, Any]) -> str:
    body = _properties(schema) if "properties" in schema else f"<div>{schema_html(schema)}</div>"
    about = f"<p>{_text(schema['description'])}</p>" if "description" in schema else ""
    return f'<section id="schema-{escape(name)}"><h3>{escape(name)}</h3>{about}{body}</section>'


def _method(method: str) -> str:
    return f'<span class="method {method}">{method.upper()}</span>'


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) of every operation in ``document``, in its order."""
    return [(m, path, item[m]) for path, item in document["paths"].items() for m in _METHODS if m in item]


def render(document: dict[str, Any]) -> str:
    """The page for ``document``: every operation, then every named schema, one anchor each."""
    info, ops = document["info"], operations(document)
    toc = "".join(
        f'<li><a href="#{_anchor(m, p)}">{_method(m)} <code>{escape(p)}</code></a> {_text(op.get("summary", ""))}</li>'
        for m, p, op in ops
    )
    schemas = "".join(_schema_section(name, s) for name, s in document["components"]["schemas"].items())
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(info['title'])} API</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>{escape(info['title'])} <span class=muted>{escape(info['version'])}</span></h1>"
        f"<p>{_text(info.get('summary', ''))}</p><p>{_text(info.get('description', ''))}</p>"
        f'<p>The same as OpenAPI {escape(document["openapi"])}: <a href="openapi.json">openapi.json</a>.</p>'
        f"</header><nav><h2>Operations</h2><ul>{toc}</ul></nav>"
        f"{''.join(_operation(document, m, p, op) for m, p, op in ops)}"
        f'<h2 id="schemas">Schemas</h2>{schemas}</body></html>'
    )


_JSON = orjson.dumps(DOCUMENT)
_HTML = render(DOCUMENT).encode()


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=_JSON, content_type="application/json")


@routes.get("/docs")
async def docs(request: web.Request) -> web.Response:
    return web.Response(body=_HTML, content_type="text/html", charset="utf-8")
