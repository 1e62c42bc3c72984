"""A predictor that returns at once (the benchmark's baseline and the non-streaming text path).

`async def` with COG_MAX_CONCURRENCY > 1, so back-to-back requests never meet a busy slot (409).
"""
# ruff: noqa: B008

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    async def predict(
        self,
        prompt: str = Input(description="The prompt"),
        max_tokens: int = Input(description="Ignored", default=16, ge=1),
    ) -> str:
        return "ok: " + prompt
