"""Render the pages of report PDFs to PNG, to look at them (and for the README's pictures of the report).

Usage::

    python scripts/render_pages.py OUT_DIR [--dpi 110] [--documents tests/data] [--pages] [--colors 256]

Writes ``OUT_DIR/<name>/report.{md,html,pdf}`` for every ``<name>_document.json`` in ``--documents`` (the test
fixtures by default) and, with ``--pages``, ``OUT_DIR/<name>-page-<n>.png`` for every page of each PDF, with
``--colors`` reduced to that many colours (small files for the docs). pypdfium2 (the ``dev`` extra) renders the
pages; nothing here is imported by the library. ``docs/report-page-1.png`` and ``docs/report-page-2.png`` are
pages 1 and 5 of the plan fixture's report: ``--pages --colors 256``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from advisor.application.reports import write_reports


def render_pages(pdf: Path, out: Path, stem: str, dpi: float, colors: int = 0) -> list[Path]:
    """Each page of ``pdf`` as ``out/<stem>-page-<n>.png`` at ``dpi``, with at most ``colors`` colours (0: all)."""
    import pypdfium2

    paths = []
    document = pypdfium2.PdfDocument(pdf)
    try:
        for number, page in enumerate(document, start=1):
            path = out / f"{stem}-page-{number}.png"
            image = page.render(scale=dpi / 72).to_pil().convert("RGB")
            (image.quantize(colors) if colors else image).save(path, optimize=True)
            paths.append(path)
    finally:
        document.close()
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--dpi", type=float, default=110.0)
    parser.add_argument("--documents", type=Path, default=Path(__file__).parents[1] / "tests" / "data")
    parser.add_argument("--pages", action="store_true", help="also render every page to PNG")
    parser.add_argument("--colors", type=int, default=0, help="reduce the page PNGs to this many colours")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for source in sorted(args.documents.glob("*_document.json")):
        name = source.name.removesuffix("_document.json")
        with open(source, encoding="utf-8") as stream:
            paths = write_reports(json.load(stream), args.out / name)
        print(paths["pdf"])
        if args.pages:
            for path in render_pages(paths["pdf"], args.out, name, args.dpi, args.colors):
                print(path)


if __name__ == "__main__":
    main()
