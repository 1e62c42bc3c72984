"""A predictor that returns at once (the benchmark's baseline and the non-streaming text path)."""
# ruff: noqa: B008, UP045  (Cog declares inputs as Input(...) defaults, Optional[...] for files)

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(
        self,
        prompt: str = Input(description="The prompt"),
        max_tokens: int = Input(description="Ignored", default=16, ge=1),
    ) -> str:
        return "ok: " + prompt
