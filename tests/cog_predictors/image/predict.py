"""An image predictor that draws a PNG with PIL (deterministic, no model).

Colour words in the prompt become shapes: "red circle", "blue square", "green triangle"...
With an input `image`, it draws on a copy of that image instead of a white canvas.
"""
# ruff: noqa: B008, UP045  (Cog declares inputs as Input(...) defaults, Optional[...] for files)

import re
import tempfile
from typing import Optional

from cog import BasePredictor, Input, Path
from PIL import Image, ImageDraw

COLORS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60),
          "yellow": (240, 210, 20), "black": (0, 0, 0), "orange": (250, 140, 0)}


class Predictor(BasePredictor):
    def predict(
        self,
        prompt: str = Input(description="What to draw"),
        width: int = Input(description="Width", default=128, ge=16, le=1024),
        height: int = Input(description="Height", default=128, ge=16, le=1024),
        seed: int = Input(description="Ignored", default=0),
        image: Optional[Path] = Input(description="Optional image to draw on", default=None),
    ) -> Path:
        if image is not None:
            canvas = Image.open(image).convert("RGB").resize((width, height))
        else:
            canvas = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(canvas)
        shapes = re.findall(r"(red|blue|green|yellow|black|orange)\s+(circle|square|triangle)",
                            prompt.lower())
        n = max(len(shapes), 1)
        for i, (color, shape) in enumerate(shapes):
            x0 = int(width * i / n) + 4
            x1 = int(width * (i + 1) / n) - 4
            y0, y1 = height // 4, height * 3 // 4
            fill = COLORS[color]
            if shape == "circle":
                draw.ellipse([x0, y0, x1, y1], fill=fill)
            elif shape == "square":
                draw.rectangle([x0, y0, x1, y1], fill=fill)
            else:
                draw.polygon([(x0, y1), ((x0 + x1) // 2, y0), (x1, y1)], fill=fill)
        out = Path(tempfile.mkdtemp()) / "out.png"
        canvas.save(out)
        return out
