"""TomEvidence -> HTML (Jinja2, autoescaped, self-contained) -> PDF (WeasyPrint, same HTML).

One template for both, so the PDF an auditor files is exactly what the HTML shows. The HTML
loads nothing from anywhere: the production floor is offline, and a report that fetched fonts
or scripts would leak that it was opened.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from floor_agent.report.tom import TomEvidence

TEMPLATES = Path(__file__).with_name("templates")


def render_html(evidence: TomEvidence) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=jinja2.select_autoescape(["html"]),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    return env.get_template("tom.html").render(ev=evidence)


def render_pdf(html: str) -> bytes:
    """The PDF of the HTML; ValueError if the HTML tried to load any outside resource."""
    import weasyprint

    attempted: list[str] = []

    def no_fetch(url: str, *args: object, **kwargs: object) -> dict[str, object]:
        attempted.append(url)
        raise ValueError(f"the report must not load {url!r}")

    pdf = weasyprint.HTML(string=html, url_fetcher=no_fetch).write_pdf()
    if attempted:
        raise ValueError(f"the report tried to load outside resources: {attempted[:5]}")
    assert pdf is not None
    return bytes(pdf)
