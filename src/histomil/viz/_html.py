"""Self-contained HTML pieces for the report: inline CSS, escaped tables, base64 PNG figures,
rendered from the Jinja2 templates in ``histomil/viz/templates`` (autoescaped).

Nothing here references a URL or a file: images are ``data:image/png;base64`` URIs and the style
sheet is inline, so a report opens offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import math
from collections.abc import Iterable, Sequence
from typing import Any

CSS = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #e3e6ec; --accent: #2b5fab; --bg: #ffffff;
        --soft: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--soft); color: var(--fg);
       font: 15px/1.55 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { background: #1f2f4d; color: #fff; padding: 22px 32px; }
header h1 { margin: 0 0 4px; font-size: 24px; font-weight: 600; }
header .meta { color: #c9d3e6; font-size: 13px; }
nav { background: #fff; border-bottom: 1px solid var(--line); padding: 8px 32px; font-size: 14px;
      position: sticky; top: 0; z-index: 2; }
nav a { color: var(--accent); text-decoration: none; margin-right: 18px; }
main { max-width: 1240px; margin: 0 auto; padding: 12px 32px 48px; }
section { background: var(--bg); border: 1px solid var(--line); border-radius: 8px;
          padding: 18px 24px; margin: 18px 0; }
h2 { font-size: 19px; margin: 0 0 12px; font-weight: 600; }
h3 { font-size: 16px; margin: 18px 0 8px; font-weight: 600; }
p.note { color: var(--muted); font-size: 13px; margin: 6px 0; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: var(--soft); border: 1px solid var(--line); border-radius: 6px;
        padding: 8px 14px; min-width: 140px; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 18px; font-weight: 600; }
table { border-collapse: collapse; font-size: 13.5px; margin: 6px 0; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 12px; text-align: left;
         vertical-align: top; }
th { background: var(--soft); font-weight: 600; position: sticky; top: 0; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:hover td { background: #fafbfd; }
.scroll { max-height: 460px; overflow: auto; border: 1px solid var(--line); border-radius: 6px; }
.scroll table { margin: 0; width: 100%; }
figure { margin: 10px 0 18px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 12px; }
pre { background: #f3f4f7; border: 1px solid var(--line); border-radius: 6px; padding: 12px;
      overflow: auto; font-size: 12.5px; max-height: 520px; }
details summary { cursor: pointer; color: var(--accent); margin: 6px 0; }
.pos { color: #b3261e; font-weight: 600; } .neg { color: #1b6e3a; font-weight: 600; }
footer { color: var(--muted); font-size: 12px; text-align: center; padding: 16px; }
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 3) -> str:
    """Numbers with ``digits`` decimals (NaN as an en dash); everything else as text."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(f):
        return "\u2013"
    return f"{f:.{digits}f}"


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@functools.lru_cache(maxsize=1)
def _env() -> Any:
    """Jinja2 environment over ``histomil/viz/templates`` with HTML autoescaping on."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    return Environment(
        loader=PackageLoader("histomil.viz", "templates"),
        autoescape=select_autoescape(["html", "j2"], default=True),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def render(template: str, **context: Any) -> str:
    """Render ``templates/<template>`` (values escaped unless wrapped in :class:`RawHtml`)."""
    return _env().get_template(template).render(**context)


def _markup(html_text: str) -> Any:
    from markupsafe import Markup

    return Markup(html_text)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], scroll: bool = False) -> str:
    """An escaped HTML table; numeric cells right-aligned."""
    cells = [
        [
            {"text": _markup(v.html), "num": False}
            if isinstance(v, RawHtml)
            else {"text": fmt(v), "num": _is_num(v)}
            for v in row
        ]
        for row in rows
    ]
    return render("table.html.j2", headers=list(headers), rows=cells, scroll=scroll)


class RawHtml:
    """A table cell that is already HTML (e.g. a coloured label)."""

    def __init__(self, html_text: str) -> None:
        self.html = html_text


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure(png: bytes, caption: str = "", alt: str = "") -> str:
    return render("figure.html.j2", src=png_data_uri(png), caption=caption, alt=alt or caption)


def fig_png(fig: Any, dpi: int = 110) -> bytes:
    """Render a matplotlib figure to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def markdown_html(text: str) -> str:
    """Markdown (tables included) to HTML with raw HTML disabled; ``<pre>`` when no renderer."""
    try:
        from markdown_it import MarkdownIt
    except ImportError:
        return f"<pre>{esc(text)}</pre>"
    md = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")
    md.disable(["image", "link", "autolink"])  # nothing may point outside the file
    return md.render(text)


def page(title: str, meta: str, sections: Sequence[tuple[str, str, str]], footer: str) -> str:
    """The whole document: header, a nav bar over the sections, the sections, a footer.
    ``meta`` and the section bodies are HTML already; titles and the footer are escaped."""
    return render(
        "page.html.j2",
        title=title,
        meta=_markup(meta),
        css=_markup(CSS),
        sections=[(a, t, _markup(b)) for a, t, b in sections],
        footer=footer,
    )
