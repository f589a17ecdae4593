"""``/docs``: the API described as one plain HTML page, made from the OpenAPI document.

FastAPI's own ``/docs`` (Swagger UI) loads its JavaScript and CSS from a CDN, so it is blank on a
machine without internet access, where simsearch is meant to work. This page needs nothing
but the server: every endpoint with its parameters, request body and responses.
"""

from __future__ import annotations

from html import escape
from typing import Any

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5rem auto; max-width: 60rem;
       padding: 0 1rem; color: #1d232a; }
h2 { margin-top: 2rem; font-family: ui-monospace, monospace; font-size: 1.05rem; }
.method { display: inline-block; min-width: 4.2em; padding: .1em .4em; border-radius: 4px;
          color: #fff; background: #2f6fdd; text-align: center; }
.method.post { background: #2e8540; }
table { border-collapse: collapse; margin: .4rem 0; }
td, th { border: 1px solid #d6dbe0; padding: .25rem .5rem; text-align: left; vertical-align: top; }
code { font-family: ui-monospace, monospace; }
.muted { color: #5b6672; }
"""


def page(spec: dict[str, Any]) -> str:
    """The HTML page for an OpenAPI document."""
    info = spec.get("info", {})
    title = f"{info.get('title', 'API')} {info.get('version', '')}".strip()
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{escape(title)} API</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)} API</h1>",
        f"<p>{escape(info.get('description', ''))} The machine-readable description is "
        "<a href='/openapi.json'>/openapi.json</a>; the search page is <a href='/'>/</a>.</p>",
    ]
    for path, operations in spec.get("paths", {}).items():
        for method, operation in operations.items():
            parts.append(_operation(path, method, operation, spec))
    parts.append("</body></html>")
    return "\n".join(parts)


def _operation(path: str, method: str, op: dict[str, Any], spec: dict[str, Any]) -> str:
    out = [
        f"<h2 id='{escape(method)}-{escape(path)}'><span class='method {escape(method)}'>"
        f"{escape(method.upper())}</span> {escape(path)}</h2>",
        f"<p><b>{escape(op.get('summary', ''))}</b></p>",
    ]
    if op.get("description"):
        out.append(f"<p class='muted'>{escape(op['description'])}</p>")
    params = op.get("parameters", [])
    if params:
        out.append("<table><tr><th>parameter</th><th>in</th><th>type</th><th>about</th></tr>")
        for p in params:
            required = " (required)" if p.get("required") else ""
            out.append(
                f"<tr><td><code>{escape(p.get('name', ''))}</code>{required}</td>"
                f"<td>{escape(p.get('in', ''))}</td>"
                f"<td>{escape(_schema_text(p.get('schema', {}), spec))}</td>"
                f"<td>{escape(p.get('description', ''))}</td></tr>"
            )
        out.append("</table>")
    body = op.get("requestBody", {}).get("content", {})
    for media, content in body.items():
        fields = _resolve(content.get("schema", {}), spec).get("properties", {})
        names = ", ".join(fields) or "-"
        out.append(f"<p>Request body: <code>{escape(media)}</code>, fields: {escape(names)}</p>")
    responses = op.get("responses", {})
    if responses:
        codes = ", ".join(f"{code} {r.get('description', '')}" for code, r in responses.items())
        out.append(f"<p class='muted'>Responses: {escape(codes)}</p>")
    return "\n".join(out)


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """A schema with a local ``$ref`` followed (FastAPI refers to #/components/schemas/...)."""
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return schema
    found: Any = spec
    for part in ref[2:].split("/"):
        found = found.get(part, {}) if isinstance(found, dict) else {}
    return found if isinstance(found, dict) else {}


def _schema_text(schema: dict[str, Any], spec: dict[str, Any]) -> str:
    schema = _resolve(schema, spec)
    if "anyOf" in schema:
        kinds = [_schema_text(s, spec) for s in schema["anyOf"]]
        text = " or ".join(k for k in kinds if k)
    elif schema.get("type") == "array":
        text = f"list of {_schema_text(schema.get('items', {}), spec)}"
    else:
        text = str(schema.get("type", ""))
    bounds = [f"{key} {schema[key]}" for key in ("minimum", "maximum") if key in schema]
    if "default" in schema:
        bounds.append(f"default {schema['default']}")
    return text + (f" ({', '.join(bounds)})" if bounds else "")
