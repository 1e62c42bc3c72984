"""Structured output: a reply checked against `schema=` and parsed into the user's type.

`parse(text, schema, kind)` gives an instance of `kind` (a pydantic model or a dataclass,
validated by pydantic) or, for a plain JSON schema (`kind` None), the decoded JSON checked by
`jsonschema`. It raises `Mismatch` with a short message the model can act on; the tool loop
(`nbchat.core.loop`) sends that back once (`schema_retries`) and then raises
`errors.SchemaMismatch` holding the raw text.
"""

from __future__ import annotations

import json
from typing import Any


class Mismatch(ValueError):
    """The text is not JSON of the schema's shape; the message says where and why."""


def json_text(text: str) -> str:
    """The JSON inside a reply: the text without a Markdown code fence around it."""
    text = text.strip()
    if text.startswith("```"):
        text = text.strip("`")
        text = text[4:] if text.startswith("json") else text
    return text.strip()


def parse(text: str, schema: dict[str, Any], kind: Any = None) -> Any:
    """The reply as an instance of `kind`, or as JSON valid under `schema` when `kind` is None.

    Raises `Mismatch` (a ValueError) naming the fields that do not fit."""
    raw = json_text(text)
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise Mismatch(f"the reply is not valid JSON ({exc.args[0]})") from None
    if kind is not None:
        import pydantic

        try:
            return pydantic.TypeAdapter(kind).validate_python(data)
        except pydantic.ValidationError as exc:
            raise Mismatch("; ".join(_pydantic_error(e) for e in exc.errors())) from None
    import jsonschema

    validator = jsonschema.validators.validator_for(schema)(schema)
    problems = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if problems:
        raise Mismatch("; ".join(_schema_error(e) for e in problems[:5]))
    return data


def _pydantic_error(error: Any) -> str:
    where = ".".join(str(p) for p in error.get("loc", ())) or "the reply"
    got = error.get("input")
    shown = f" (got {json.dumps(got, default=str)[:60]})" if where != "the reply" else ""
    return f"{where}: {error.get('msg', 'invalid')}{shown}"


def _schema_error(error: Any) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "the reply"
    return f"{where}: {error.message[:200]}"


def feedback(problem: str) -> str:
    """The user message that asks again after a reply that did not fit."""
    return (f"Your reply does not fit the required JSON schema: {problem}. Answer again with "
            "only the corrected JSON.")
