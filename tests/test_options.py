import dataclasses
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from nbchat.core.errors import BadOption, UnknownOption
from nbchat.core.options import OPTION_NAMES, OPTIONS, parse_settings, schema_of, tool_of


def test_defaults_are_provider_defaults():
    s = parse_settings({})
    assert s.options.temperature is None and s.options.stop == () and not s.options.json


def test_values_are_validated_and_layered():
    base = parse_settings({"temperature": 0.5, "system": "be brief"})
    s = parse_settings({"max_tokens": 10, "stop": "END"}, base)
    assert s.options.temperature == 0.5
    assert s.options.max_tokens == 10
    assert s.options.stop == ("END",)
    assert s.system == "be brief"


@pytest.mark.parametrize(
    "kw,needle",
    [
        ({"temperature": 5}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"top_p": 1.5}, "top_p"),
        ({"stop": ["", "x"]}, "stop"),
        ({"seed": -1}, "seed"),
        ({"json": "yes"}, "json"),
        ({"schema": 42}, "schema"),
        ({"tool_choice": "nope"}, "tool_choice"),
    ],
)
def test_bad_values_name_the_option(kw, needle):
    with pytest.raises(BadOption) as e:
        parse_settings(kw)
    assert needle in str(e.value)


def test_unknown_option_suggests_the_close_one():
    with pytest.raises(UnknownOption) as e:
        parse_settings({"temprature": 1})
    assert "'temperature'" in str(e.value)


def test_schema_from_dataclass_and_pydantic():
    @dataclass
    class Joke:
        setup: str
        rating: int = 0

    schema, name = schema_of(Joke)
    assert name == "Joke"
    assert schema["properties"] == {"setup": {"type": "string"}, "rating": {"type": "integer"}}
    assert schema["required"] == ["setup"]

    pydantic = pytest.importorskip("pydantic")

    class Person(pydantic.BaseModel):
        name: str
        age: int

    schema, name = schema_of(Person)
    assert name == "Person" and set(schema["required"]) == {"name", "age"}
    assert parse_settings({"schema": Person}).options.json is True


def test_tool_from_function_uses_hints_and_docstring():
    def get_weather(city: str, unit: str = "C", days: list[int] | None = None) -> str:
        """Current weather for a city.

        Args:
            city: the city's name
        """
        return "sunny"

    tool = tool_of(get_weather)
    assert tool.name == "get_weather"
    assert tool.description == "Current weather for a city."
    assert tool.parameters["required"] == ["city"]
    assert tool.parameters["properties"]["city"] == {"type": "string",
                                                     "description": "the city's name"}
    days = tool.parameters["properties"]["days"]  # pydantic's schema: null allowed
    assert days["anyOf"] == [{"type": "array", "items": {"type": "integer"}}, {"type": "null"}]
    assert tool.parameters["properties"]["unit"] == {"type": "string", "default": "C"}
    assert tool.to_openai()["function"]["name"] == "get_weather"


def test_tool_from_schema_and_forced_choice():
    s = parse_settings({
        "tools": [{"type": "function", "function": {"name": "add", "parameters": {}}}],
        "tool_choice": "add",
    })
    assert s.options.tools[0].name == "add" and s.options.tool_choice == "add"


# ---- the declaration: validation, fields and the README table come from OPTIONS ------------


BOUNDED = [o for o in OPTIONS.values() if o.minimum is not None or o.maximum is not None]


@pytest.mark.parametrize("option", BOUNDED, ids=lambda o: o.name)
def test_bounds_and_messages_come_from_the_declaration(option):
    if option.minimum is not None:
        assert parse_settings({option.name: int(option.minimum)})  # the bound itself is in
        with pytest.raises(BadOption) as e:
            parse_settings({option.name: int(option.minimum) - 1})
        msg = str(e.value)
        assert f"option {option.name!r}" in msg and option.range in msg and ": give " in msg
    if option.maximum is not None:
        assert parse_settings({option.name: option.maximum})
        with pytest.raises(BadOption) as e:
            parse_settings({option.name: option.maximum + 0.5})
        assert option.range in str(e.value)
    with pytest.raises(BadOption) as e:
        parse_settings({option.name: "many"})
    assert f"option {option.name!r}" in str(e.value) and "str" in str(e.value)


def test_changing_the_declaration_changes_the_validation(monkeypatch):
    assert parse_settings({"temperature": 1.5}).options.temperature == 1.5
    monkeypatch.setitem(OPTIONS, "temperature", replace(OPTIONS["temperature"], maximum=1))
    with pytest.raises(BadOption, match=r"1\.5 is outside 0\.\.1: give a number from 0 to 1"):
        parse_settings({"temperature": 1.5})


def test_every_option_fills_a_field_and_names_real_providers():
    from nbchat.core import registry
    from nbchat.core.options import ALL_PROVIDERS, SIMPLE_TYPES, Settings
    from nbchat.core.types import Options

    assert OPTION_NAMES == tuple(OPTIONS) and all(k == o.name for k, o in OPTIONS.items())
    assert set(ALL_PROVIDERS) == set(registry._BUILTIN)
    options_fields = {f.name: f for f in dataclasses.fields(Options)}
    settings_fields = {f.name for f in dataclasses.fields(Settings)}
    for o in OPTIONS.values():
        assert o.target in (settings_fields if o.input else options_fields), o.name
        assert set(o.providers) <= set(ALL_PROVIDERS) and o.providers, o.name
        assert (o.type in SIMPLE_TYPES) or o.parse is not None, o.name
        assert o.description and "%" not in o.description, o.name  # argparse %-formats help
    assert OPTIONS["temperature"].default is None and OPTIONS["stop"].default == ()
    # a simple option given sets exactly its declared field
    for o in OPTIONS.values():
        if o.type == "string" and o.parse is None:
            s = parse_settings({o.name: "x"})
            assert getattr(s if o.input else s.options, o.target) == "x", o.name


def test_none_leaves_an_earlier_value_except_where_declared():
    base = parse_settings({"temperature": 0.5, "tools": [{"name": "f"}], "tool_choice": "f"})
    s = parse_settings({"temperature": None, "tool_choice": None}, base)
    assert s.options.temperature == 0.5 and s.options.tool_choice is None
    assert [o.name for o in OPTIONS.values() if o.none_clears] == ["tool_choice"]


def test_readme_options_table_is_the_generated_one():
    root = Path(__file__).resolve().parent.parent
    printed = subprocess.run([sys.executable, str(root / "scripts/options_table.py")],
                             capture_output=True, text=True, check=True, cwd=root).stdout
    readme = (root / "README.md").read_text()
    start = "<!-- options table: generated by scripts/options_table.py"
    assert start in readme, "README.md lost the options table's markers"
    table = readme.split(start, 1)[1].split("-->", 1)[1].split("<!-- end of options table -->")[0]
    assert table.strip() == printed.strip(), (
        "README.md's options table differs from the declaration: run "
        "`.venv/bin/python scripts/options_table.py --write`"
    )
    for o in OPTIONS.values():  # one row per option, with its description and range
        row = next(line for line in printed.splitlines() if line.startswith(f"| `{o.name}`"))
        assert o.description[1:] in row and (o.range or "-") in row


def test_settings_repr_shows_a_base_url_without_its_user_and_password():
    """A key given as a URL's user or password (`http://user:key@host`) stays out of the repr
    (a notebook's `settings` output, a traceback's locals), as from `Reply.endpoint`."""
    for url in ("http://user:sk-test-SECRET123456789@127.0.0.1:8/v1",
                "http://x:pass1234word@127.0.0.1:8/v1", "http://nvapi-abcdef123456@host/v1"):
        text = repr(parse_settings({"base_url": url, "temperature": 0}))
        assert "SECRET" not in text and "pass1234" not in text and "abcdef123456" not in text
        assert "temperature=0.0" in text and "127.0.0.1:8/v1" in text or "host/v1" in text
