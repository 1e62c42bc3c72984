"""A notebook that shows the XSS corpus on every Python surface, for nbclient + nbconvert and
for real JupyterLab / Notebook 7.

Its kernel registers a scripted provider (tests/fakes.py, as a plugin would) that streams each
payload one character per chunk; one `%%chat` cell per payload (so an unclosed fence in one
cannot hide the next), then displayed `Reply`s, `CompareResult`s (with the joined pairs side by
side), a real `compare()`, `Markdown(panel.to_markdown())` and a `ChatPanel` holding the corpus.
A cell shows the rendering rules, for the feature checks; with `control`, a last cell shows live
HTML from the notebook's own code, so a test can see that its checks do catch a live payload.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from xss_corpus import CORPUS, REMOTE_HOST

TESTS = Path(__file__).resolve().parent

#: one reply with every rendering rule, shown by the last cell (class "rules" in its output)
RULES = (
    "# Heading one\n\n## Heading two\n\n"
    "Math $x^2$ and $$y_1$$ and \\(a+b\\) and\n\\[c = d\\]\n\n"
    "If I put $100 in and add $50, I have $150.\n\n"
    "> a quoted line\n\n"
    "| name | n |\n|:--|--:|\n| Ada | 36 |\n\n"
    "1. first\n\n2. second\n\n   - nested\n\n3. third\n\n"
    "```python\nprint('hi')\n```\n"
)


#: a control: live HTML from the notebook's own code (trusted while it runs), which the checks
#: must see (one dialog, one request to the remote host)
CONTROL = (f"<img src=x onerror=\"alert('control')\">"
           f"<img src='http://{REMOTE_HOST}/control.png' alt='control'>")


def _cell(source: str, tags: list[str] | None = None) -> dict:
    return {"cell_type": "code", "execution_count": None, "id": uuid.uuid4().hex[:8],
            "metadata": {"tags": tags or []}, "outputs": [], "source": source}


def cells(delay: float = 0.0, widget: bool = True, control: bool = False) -> list[dict]:
    setup = (
        "import sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "from fakes import FakeProvider\n"
        "from xss_corpus import CORPUS, JOINED\n"
        "from nbchat.core import registry\n"
        "fake = FakeProvider('fake')\n"
        "registry.register(fake)\n"
        f"for _, p in CORPUS:\n    fake.enqueue(*p, delay={delay!r})\n"
        "duo = FakeProvider('duo')\n"
        "registry.register(duo)\n"
        "duo.enqueue(*JOINED[0][1][0])\n"
        "duo.enqueue(*JOINED[0][1][1])\n"
    )
    out = [_cell(setup), _cell("%load_ext nbchat\n%config ChatMagics.update_interval = 0.02")]
    out += [_cell(f"%%chat -m fake:echo\n{marker}") for marker, _ in CORPUS]
    out.append(_cell(
        "from IPython.display import Markdown, display\n"
        "from nbchat import Reply\n"
        "from nbchat.notebook.compare import CompareResult\n"
        "for marker, payload in CORPUS:\n"
        "    display(Reply(payload, 'fake:echo', error=ValueError(payload)))\n"
    ))
    out.append(_cell(
        "for i in range(0, len(CORPUS), 4):\n"
        "    display(CompareResult({m: Reply(p, 'fake:echo') for m, p in CORPUS[i:i + 4]},\n"
        "                          prompt=CORPUS[i][1]))\n"
        "for marker, (a, b) in JOINED:\n"
        "    display(CompareResult({marker + 'a': Reply(a, 'x'), marker + 'b': Reply(b, 'x')}))\n"
    ))
    out.append(_cell("import nbchat\nnbchat.compare(['duo:echo', 'duo:other'], 'hi')"))
    out.append(_cell(
        "from nbchat import ChatPanel\n"
        "panel = ChatPanel('fake:echo')\n"
        "entries = []\n"
        "for marker, payload in CORPUS:\n"
        "    entries += [{'role': 'user', 'text': payload, 'images': []},\n"
        "                {'role': 'assistant', 'model': payload, 'text': payload,\n"
        "                 'badge': payload, 'images': []},\n"
        "                {'role': 'error', 'text': payload}]\n"
        "for marker, pair in JOINED:\n"
        "    entries += [{'role': 'assistant', 'text': t, 'images': []} for t in pair]\n"
        "panel.transcript = entries\n"
        "display(Markdown(panel.to_markdown()))\n"
        + ("panel" if widget else "")  # the widget's own renderer is the browser side's
    ))
    out.append(_cell("%%chat -m fake:echo\nrules\n", ["rules"]))
    if control:  # not model output: HTML the notebook's own code shows, so a live page trips
        out.append(_cell(f"from IPython.display import HTML\ndisplay(HTML({CONTROL!r}))"))
    return out


def write(path: Path, delay: float = 0.0, widget: bool = True, control: bool = False) -> Path:
    nb = {"cells": cells(delay, widget, control),
          "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                      "name": "python3"}},
          "nbformat": 4, "nbformat_minor": 5}
    # the rules reply comes last in the queue
    nb["cells"][0]["source"] += f"fake.enqueue(*{RULES!r}, delay={delay!r})\n"
    path.write_text(json.dumps(nb))
    return path
