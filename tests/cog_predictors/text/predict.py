"""A streaming text predictor with deterministic answers (no model: tests check mechanics).

- a prompt containing "ECHO-INPUTS" answers with the inputs it received, as JSON (with
  stop_sequences reversed, so that echoing them does not stop the client);
- a prompt asking to "name a company" answers "Acme Rocket Co.";
- a prompt asking to "describe the logo" answers with shapes and colours, naming the company;
- anything else answers "You said: <the last user line>." then "count 1", "count 2", ...
  until max_new_tokens tokens were sent, sleeping `delay` seconds between tokens.
It ignores stop_sequences on purpose, so that stopping is the client's work.
`marker` names a file the predictor writes when it is cancelled (tests read it).
"""
# ruff: noqa: B008, UP045  (Cog declares inputs as Input(...) defaults, Optional[...] for files)

import json
import time

from cog import BasePredictor, ConcatenateIterator, Input


class Predictor(BasePredictor):
    def predict(
        self,
        prompt: str = Input(description="The prompt"),
        system_prompt: str = Input(description="System prompt", default=""),
        max_new_tokens: int = Input(description="Tokens to send", default=24, ge=1, le=100000),
        temperature: float = Input(description="Ignored", default=0.7, ge=0, le=5),
        top_p: float = Input(description="Ignored", default=1.0, ge=0, le=1),
        seed: int = Input(description="Ignored", default=-1),
        stop_sequences: str = Input(description="Ignored on purpose", default=""),
        delay: float = Input(description="Seconds between tokens", default=0.0, ge=0, le=5),
        marker: str = Input(description="File written on cancel", default=""),
    ) -> ConcatenateIterator[str]:
        sent = 0
        try:
            for token in self.tokens(prompt, system_prompt, max_new_tokens, temperature, top_p,
                                     seed, stop_sequences):
                if sent and delay:
                    time.sleep(delay)
                sent += 1
                yield token
        except BaseException:
            if marker:
                with open(marker, "w") as fh:
                    fh.write(f"cancelled after {sent} tokens")
            raise

    def tokens(self, prompt, system_prompt, max_new_tokens, temperature, top_p, seed, stop):
        if "ECHO-INPUTS" in prompt:
            text = json.dumps({
                "prompt": prompt, "system_prompt": system_prompt,
                "max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
                "seed": seed, "stop_sequences": stop[::-1],
            }, sort_keys=True)
            yield from (text[i:i + 7] for i in range(0, len(text), 7))
            return
        lines = prompt.strip().splitlines() or [""]
        asked = lines[-2 if len(lines) > 1 and prompt.endswith("Assistant:") else -1]
        asked = asked.removeprefix("User: ")
        if "name a company" in asked.lower():
            yield from ["Acme", " Rocket", " Co."]
            return
        if "describe the logo" in asked.lower():
            company = asked.split(" of ", 1)[1].strip(" ?") if " of " in asked else "it"
            company = company.removesuffix(".")  # the sentence's full stop
            yield from [f"The logo of {company}:", " a red circle", " above", " a blue square",
                        " on white."]
            return
        yield "You said:"
        for word in asked.split():
            yield " " + word
        yield ".\n"
        n = 1
        while n + len(asked.split()) + 2 <= max_new_tokens:
            yield f"count {n}\n"
            n += 1
