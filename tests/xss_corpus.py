"""Hostile model output: every way we know for a reply to run script, leave a live
`javascript:` link or make the browser fetch a remote URL on its own.

Shared by the Python surfaces' tests (`%%chat`, `Reply`, `CompareResult`, panel exports,
nbconvert HTML, JupyterLab, Notebook 7) and the browser widgets' tests.

Conventions, so one check fits every payload:
- `CORPUS` is a list of `(marker, payload)`; each marker is unique (across `JOINED` too) and
  is written into the payload's active part: script calls `alert('<marker>')`, a remote URL is
  `http://198.51.100.7/<marker>...` (TEST-NET-2: never routed, so a request shows up in a
  request listener and goes nowhere). A surface passes when no dialog opens, no request goes
  to `REMOTE_HOST`, and no `href` holds a `javascript:`/`vbscript:`/`data:` URL.
- `JOINED` holds replies that are harmless alone and hostile when a surface joins them
  (an unclosed fence in one reply must not change how the next one is read).
- Payloads are raw model text (Markdown); `\\t` is a real tab where a tab is the trick.
"""

from __future__ import annotations

#: the only host remote URLs in payloads point at
REMOTE_HOST = "198.51.100.7"
R = f"http://{REMOTE_HOST}"

RAW_HTML = [
    ("h01", "<img src=x onerror=\"alert('h01')\">"),
    ("h02", "<script>alert('h02')</script>"),
    ("h03", "<svg onload=\"alert('h03')\"></svg>"),
    ("h04", "<svg><script>alert('h04')</script></svg>"),
    ("h05", "<iframe src=\"javascript:alert('h05')\"></iframe>"),
    ("h06", "<iframe srcdoc=\"<script>parent.alert('h06')</script>\"></iframe>"),
    ("h07", "<object data=\"javascript:alert('h07')\"></object>"),
    ("h08", "<embed src=\"javascript:alert('h08')\">"),
    ("h09", "<math><mtext><table><mglyph><style><img src=x onerror=\"alert('h09')\">"),
    ("h10", "<math href=\"javascript:alert('h10')\"><mi>click h10</mi></math>"),
    ("h11", f"<base href=\"{R}/h11/\">\n\n[relative](page.html) ![rel](pic.png)"),
    ("h12", "<meta http-equiv=\"refresh\" content=\"0;url=javascript:alert('h12')\">"),
    ("h13", "<form action=\"javascript:alert('h13')\"><button>h13</button></form>"),
    ("h14", f"<link rel=\"stylesheet\" href=\"{R}/h14.css\">"),
    ("h15", f"<img srcset=\"{R}/h15.png 1x, {R}/h15b.png 2x\">"),
    ("h16", f"<div style=\"background:url({R}/h16.png)\">h16</div>"),
    ("h17", f"<style>body {{ background: url({R}/h17.png) }}</style>"),
    ("h18", "<details open ontoggle=\"alert('h18')\"><summary>h18</summary></details>"),
    ("h19", "<a href=\"javascript:alert('h19')\">click h19</a>"),
    ("h20", "<body onload=\"alert('h20')\">"),
    ("h21", "<input autofocus onfocus=\"alert('h21')\">"),
    ("h22", "<video><source onerror=\"alert('h22')\"></video>"),
    ("h23", "<audio src=x onerror=\"alert('h23')\"></audio>"),
    ("h24", "<noscript><p title=\"</noscript><img src=x onerror=alert('h24')>\"></noscript>"),
    ("h25", "<svg><a xlink:href=\"javascript:alert('h25')\"><text y=\"20\">h25</text></a></svg>"),
    ("h26", "<svg><animate onbegin=\"alert('h26')\" attributeName=\"x\" dur=\"1s\"/></svg>"),
    ("h27", "<!--><img src=x onerror=\"alert('h27')\">-->"),
    ("h28", "<title><img src=x onerror=\"alert('h28')\"></title>"),
    ("h29", f"<img src=\"{R}/h29.png\">"),
    ("h30", f"<picture><source srcset=\"{R}/h30.png\"><img alt=h30></picture>"),
    ("h31", "<scr<script>ipt>alert('h31')</script>"),
    ("h32", "<a data-commandlinker-command=\"notebook:run-all-cells\" href=\"#\">h32</a>"),
    ("h33", "Text then <img src=x\nonerror=\"alert('h33')\"> inline across a line"),
    ("h34", "<svg><style>@import url(" + R + "/h34.css);</style></svg>"),
]

MARKDOWN = [
    ("m01", "[click m01](javascript:alert('m01'))"),
    ("m02", "[click m02](JaVaScRiPt:alert('m02'))"),
    ("m03", "[click m03](&#106;avascript:alert('m03'))"),
    ("m04", "[click m04](&#x6A;avascript&colon;alert('m04'))"),
    ("m05", "[click m05](<java\tscript:alert('m05')>)"),
    ("m06", "[click m06](java&#9;script:alert('m06'))"),
    ("m07", "[click m07](javascript\\:alert('m07'))"),
    ("m08", "[click m08](<data:text/html,<script>alert('m08')</script>>)"),
    ("m09", "[click m09](vbscript:msgbox('m09'))"),
    ("m10", "[click m10](   javascript:alert('m10')   )"),
    ("m11", "[t][a\\]b]\n\n[a\\]b]: javascript:alert('m11')"),
    ("m12", "- item\n\n  [x12]: javascript:alert('m12')\n\n[click m12][x12]"),
    ("m13", "[click m13][r13]\n\n[r13]: <javascript:alert('m13')>"),
    ("m14", "[click m14]\n\n[click m14]: &#x6a;avascript:alert('m14')"),
    ("m15", "<javascript:alert('m15')>"),
    ("m16", "<vbscript:msgbox('m16')>"),
    ("m17", "<data:text/html,<script>alert('m17')</script>>"),
    ("m18", f"![m18]({R}/m18.png)"),
    ("m19", "![m19](//" + REMOTE_HOST + "/m19.png)"),
    ("m20", f"![m20][img20]\n\n[img20]: {R}/m20.png"),
    ("m21", f"![m21](<{R}/m21.png> \"title\")"),
    ("m22", f"[![m22]({R}/m22.png)](javascript:alert('m22'))"),
    ("m23", "![m23](javascript:alert('m23'))"),
    ("m24", "[click m24](#\" onmouseover=\"alert('m24'))"),
    ("m25", "[click m25](https://example.com \"t\\\" onmouseover=\\\"alert('m25')\")"),
    ("m26", "Inline <a href=\"javascript:alert('m26')\">raw m26</a> in a paragraph"),
    ("m27", "[click m27](ja\u200bvascript:alert('m27'))"),
    ("m28", "[click m28](\\javascript:alert('m28'))"),
    ("m29", f"> quoted ![m29]({R}/m29.png)\n> and [click m29](javascript:alert('m29'))"),
    ("m30", f"| a | b |\n|---|---|\n| ![m30]({R}/m30.png) | [x](javascript:alert('m30')) |"),
    ("m31", "1. one\n\n   [x31]: javascript:alert('m31')\n2. [click m31][x31]"),
    ("m32", f"![m32](data:image/svg+xml,<svg onload=alert('m32')>) ![m32b]({R}/m32b.gif)"),
    ("m33", "[click m33](file:///etc/passwd?m33)"),
    ("m34", "www.example.com/m34 and https://example.com/m34?<img/src/onerror=alert('m34')>"),
    ("m35", "[click m35](java\\\nscript:alert('m35'))"),
]

FENCES = [
    ("f01", "```\nx\n```~\n<img src=x onerror=\"alert('f01')\">\n"),
    ("f02", "Some text.\n\n ```\n<img src=x onerror=\"alert('f02')\">\n```\n"),
    ("f03", "```\n<img src=x onerror=\"alert('f03')\">"),
    ("f04", "- a\n  ```\n<img src=x onerror=\"alert('f04')\">\n"),
    ("f05", "`<img src=x onerror=\"alert('f05')\">``"),
    ("f06", "`a\n\n<img src=x onerror=\"alert('f06')\">\n\nb`"),
    ("f07", "```x`\n<img src=x onerror=\"alert('f07')\">\n```"),
    ("f08", "~~~\n<script>alert('f08')</script>\n~~~~\n<script>alert('f08')</script>"),
    ("f09", "````\n```\n````\n<img src=x onerror=\"alert('f09')\">"),
    ("f10", "~~~\n```\n<img src=x onerror=\"alert('f10')\">"),
    ("f11", "    code\n<img src=x onerror=\"alert('f11')\">"),
    ("f12", "```\" onmouseover=\"alert('f12')\nx\n```"),
    ("f13", "```js\"><img src=x onerror=\"alert('f13')\">\nx\n```"),
    ("f14", "`</code><img src=x onerror=\"alert('f14')\">`"),
    ("f15", "> ```\n<img src=x onerror=\"alert('f15')\">"),
    ("f16", "1. step\n\n   ```\n   ok\n   ```\n<img src=x onerror=\"alert('f16')\">"),
    ("f17", "\\`<img src=x onerror=\"alert('f17')\">`"),
    ("f18", "`a\n<script>alert('f18')</script>`"),
    ("f19", "   ```\n<img src=x onerror=\"alert('f19')\">\n  ```\n"),
]

MATH = [
    ("t01", "$\\href{javascript:alert('t01')}{click t01}$"),
    ("t02", "$$\\href{javascript:alert('t02')}{click t02}$$"),
    ("t03", "\\(\\href{javascript:alert('t03')}{click t03}\\)"),
    ("t04", f"\\[\\style{{background:url({R}/t04.png)}}{{x}}\\]"),
    ("t05", f"$\\style{{background-image:url('{R}/t05.png')}}{{x}}$"),
    ("t06", "$\\class{jp-Dialog}{t06}\\cssId{t06}{y}$"),
    ("t07", f"$\\bbox[background:url({R}/t07.png)]{{x}}$"),
    ("t08", "$\\url{javascript:alert('t08')}$"),
    ("t09", f"$\\htmlStyle{{background:url({R}/t09.png)}}{{y}}$"),
    ("t10", f"$\\includegraphics{{{R}/t10.png}}$"),
    ("t11", "$x</span><img src=x onerror=\"alert('t11')\">$"),
    ("t12", "$$\n</div><img src=x onerror=\"alert('t12')\">\n$$"),
    ("t13", "\\[\n\\href{javascript:alert('t13')}{t13}\n\\]"),
]

#: (marker, replies): each reply is harmless to a parser that reads it alone
JOINED = [
    ("j01", ("Here is code:\n\n```\nprint(1)", "<img src=x onerror=\"alert('j01')\">")),
    ("j02", ("    indented", "<script>alert('j02')</script>")),
    ("j03", ("`open span", "<img src=x onerror=\"alert('j03')\">`")),
    ("j04", ("[click j04][j4]", "[j4]: javascript:alert('j04')")),
    ("j05", ("$a", "<img src=x onerror=\"alert('j05')\">$")),
]

CORPUS: list[tuple[str, str]] = RAW_HTML + MARKDOWN + FENCES + MATH

#: the issue's own examples (issue 10), each a corpus entry above
ISSUE_EXAMPLES = ["f01", "f02", "m11", "m12"]
