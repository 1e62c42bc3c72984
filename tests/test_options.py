from dataclasses import dataclass

import pytest

from nbchat.core.errors import BadOption, UnknownOption
from nbchat.core.options import parse_settings, schema_of, tool_of


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
    assert tool.parameters["properties"]["days"] == {"type": "array",
                                                     "items": {"type": "integer"}}
    assert tool.to_openai()["function"]["name"] == "get_weather"


def test_tool_from_schema_and_forced_choice():
    s = parse_settings({
        "tools": [{"type": "function", "function": {"name": "add", "parameters": {}}}],
        "tool_choice": "add",
    })
    assert s.options.tools[0].name == "add" and s.options.tool_choice == "add"
