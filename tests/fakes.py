"""A real provider for tests: replies are enqueued, calls are recorded (registered like any
other provider)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from nbchat.core.provider import Provider
from nbchat.core.types import (
    Done,
    Event,
    ImageEvent,
    ImagePart,
    ModelInfo,
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


class FakeProvider(Provider):
    name = "fake"

    def __init__(self, name: str = "fake", *, vision: bool = True) -> None:
        self.name = name  # type: ignore[misc]
        self.queue: list[Scripted] = []
        self.requests: list[Request] = []
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

    async def stream(self, request: Request) -> AsyncIterator[Event]:
        self.requests.append(request)
        script = self.queue.pop(0) if self.queue else Scripted([request.messages[-1].text])
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if script.first_delay:
                await asyncio.sleep(script.first_delay)
            for i, c in enumerate(script.chunks):
                if i and script.delay:
                    await asyncio.sleep(script.delay)
                yield TextDelta(c)
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
