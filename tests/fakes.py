"""A real provider for tests: replies are enqueued, calls are recorded (registered like any
other provider). Also a realistic Markdown reply to stream (tests and benchmarks share it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

from nbchat.core.credentials import Endpoint
from nbchat.core.provider import Provider
from nbchat.core.types import (
    Done,
    Event,
    ImageEvent,
    ImagePart,
    ModelInfo,
    ReasoningDelta,
    Request,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    Usage,
)


@dataclass
class Scripted:
    """One scripted reply: text chunks, optional delay between them, then an optional error."""

    chunks: list[str] = field(default_factory=list)
    delay: float = 0.0
    first_delay: float = 0.0
    error: BaseException | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    images: list[ImagePart] = field(default_factory=list)
    finish_reason: str = "stop"
    logprobs: list[tuple[dict, ...]] = field(default_factory=list)  # per chunk, when given
    reasoning: list[str] = field(default_factory=list)  # reasoning deltas before the chunks


class FakeProvider(Provider):
    name = "fake"

    def __init__(self, name: str = "fake", *, vision: bool = True) -> None:
        self.name = name  # type: ignore[misc]
        self.queue: list[Scripted] = []
        self.requests: list[Request] = []
        self.endpoints: list[Endpoint] = []  # what the core resolved for each request
        self.closed = 0
        self.active = 0
        self.max_active = 0  # most streams open at once (batch / compare concurrency)
        self.vision = vision

    def enqueue(self, *chunks: str, **kw: object) -> Scripted:
        s = Scripted(list(chunks), **kw)  # type: ignore[arg-type]
        self.queue.append(s)
        return s

    def known_models(self) -> list[ModelInfo]:
        return [
            ModelInfo(id=f"{self.name}:echo", provider=self.name, tools=True, json=True,
                      vision=self.vision, key_set=True),
            ModelInfo(id=f"{self.name}:other", provider=self.name, key_set=True),
        ]

    def model_info(self, model: str) -> ModelInfo | None:
        return next((m for m in self.known_models() if m.name == model), None) or \
            ModelInfo(id=f"{self.name}:{model}", provider=self.name, vision=self.vision)

    async def stream(self, request: Request, endpoint: Endpoint) -> AsyncIterator[Event]:
        self.requests.append(request)
        self.endpoints.append(endpoint)
        script = self.queue.pop(0) if self.queue else Scripted([request.messages[-1].text])
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if script.first_delay:
                await asyncio.sleep(script.first_delay)
            for r in script.reasoning:
                yield ReasoningDelta(r)
            for i, c in enumerate(script.chunks):
                if i and script.delay:
                    await asyncio.sleep(script.delay)
                yield TextDelta(c, script.logprobs[i] if i < len(script.logprobs) else ())
            for img in script.images:
                yield ImageEvent(img)
            for t in script.tool_calls:
                yield ToolCallEvent(t)
            if script.error is not None:
                raise script.error
            yield Done(script.finish_reason, Usage(len(request.messages), len(script.chunks)))
        finally:
            self.active -= 1
            self.closed += 1


def realistic_reply(tokens: int = 2000, seed: int = 3) -> list[str]:
    """A Markdown answer cut into ~4-character tokens: paragraphs, lists, code fences."""
    rnd = random.Random(seed)
    words = ("the model stream block update notebook output cell render token python value "
             "function returns list of items each with a name and a short description").split()
    parts: list[str] = []
    while sum(len(p) for p in parts) < tokens * 4:
        kind = rnd.random()
        if kind < 0.55:
            n = rnd.randint(30, 110)
            parts.append(" ".join(rnd.choice(words) for _ in range(n)).capitalize() + ".\n\n")
        elif kind < 0.8:
            parts.append("".join(f"- {rnd.choice(words)} {rnd.choice(words)}\n"
                                 for _ in range(rnd.randint(3, 7))) + "\n")
        else:
            lines = [f"    x{i} = {rnd.choice(words)!r}  # {rnd.choice(words)}\n"
                     for i in range(rnd.randint(5, 30))]
            parts.append("```python\ndef f():\n" + "".join(lines) + "```\n\n")
    text = "".join(parts)
    return [text[i:i + 4] for i in range(0, len(text), 4)][:tokens]


@contextlib.contextmanager
def recorded_openai_style(model: str, monkeypatch, base: str,
                          sse: bytes) -> Iterator[list[dict]]:
    """The built-in OpenAI-style provider of `model` (openai, cerebras, nvidia, anyscale) over
    an `httpx.MockTransport` that answers every POST with `sse` (recorded wire data), keys and
    base URLs set so any of them can be asked; yields the request bodies sent, as dicts, and
    puts the provider back afterwards."""
    import httpx

    from nbchat.core import registry
    from nbchat.providers.anyscale import AnyscaleProvider
    from nbchat.providers.cerebras import CerebrasProvider
    from nbchat.providers.nvidia import NvidiaProvider
    from nbchat.providers.openai import OpenAIProvider

    bodies: list[dict] = []

    def handler(req: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(req.content))
        return httpx.Response(200, content=sse, headers={"content-type": "text/event-stream"})

    name = model.split(":")[0]
    cls = {"openai": OpenAIProvider, "cerebras": CerebrasProvider,
           "anyscale": AnyscaleProvider, "nvidia": NvidiaProvider}[name]
    registry.register(cls(transport=httpx.MockTransport(handler)))
    for env in ("CEREBRAS_API_KEY", "NVIDIA_API_KEY"):
        monkeypatch.setenv(env, "zz-test-key-123456")
    monkeypatch.setenv("OPENAI_BASE_URL", base)
    monkeypatch.setenv("ANYSCALE_BASE_URL", base)
    try:
        yield bodies
    finally:
        registry.unregister(name)
