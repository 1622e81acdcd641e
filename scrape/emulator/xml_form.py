"""XML renderings: Rails `to_xml` (Danbooru) with dasherized names and type attributes."""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr


def rails_xml(data, root: str) -> str:
    """Render a dict or a list of dicts the way Rails' `to_xml` does."""
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + _element(root, data) + "\n"


def _element(name: str, value) -> str:
    tag = name.replace("_", "-")
    if value is None:
        return f'<{tag} nil="true"/>'
    if isinstance(value, bool):
        return f'<{tag} type="boolean">{str(value).lower()}</{tag}>'
    if isinstance(value, int):
        return f'<{tag} type="integer">{value}</{tag}>'
    if isinstance(value, float):
        return f'<{tag} type="float">{value}</{tag}>'
    if isinstance(value, dict):
        inner = "".join(_element(k, v) for k, v in value.items())
        return f"<{tag}>{inner}</{tag}>"
    if isinstance(value, list):
        child = name[:-1] if name.endswith("s") else "item"
        inner = "".join(_element(child, v) for v in value)
        return f'<{tag} type="array">{inner}</{tag}>'
    text = escape(str(value))
    if "T" in text and text[:4].isdigit() and text[4:5] == "-":
        return f'<{tag} type="dateTime">{text}</{tag}>'
    return f"<{tag}>{text}</{tag}>"


def attributes_xml(tag: str, attrs: dict) -> str:
    """`<tag a="1" b="x"/>`: attribute-style elements (Gelbooru 0.2.0, Moebooru)."""
    body = " ".join(f"{k}={quoteattr('' if v is None else str(v))}" for k, v in attrs.items())
    return f"<{tag} {body}/>"
