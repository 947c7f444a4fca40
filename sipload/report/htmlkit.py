"""The building blocks of report.html: escaping, number formatting, tables and figures."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence


def e(value: object) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == int(value) and abs(value) < 1e12:
            return str(int(value))
        return f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, row_classes: Sequence[str] = (),
           text_cols: Iterable[int] = (0,)) -> str:
    text = set(text_cols)
    head = "".join(f'<th class="text">{e(h)}</th>' if i in text else f"<th>{e(h)}</th>"
                   for i, h in enumerate(headers))
    body = []
    for n, row in enumerate(rows):
        cls = row_classes[n] if n < len(row_classes) else ""
        cells = []
        for i, cell in enumerate(row):
            if isinstance(cell, Raw):
                cells.append(cell.html)
            elif i in text:
                cells.append(f'<td class="text">{e(fmt(cell))}</td>')
            else:
                cells.append(f"<td>{e(fmt(cell))}</td>")
        body.append(f'<tr class="{cls}">' + "".join(cells) + "</tr>" if cls else "<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class Raw:
    __slots__ = ("html",)

    def __init__(self, markup: str) -> None:
        self.html = markup


def verdict_cell(passed: bool) -> Raw:
    return Raw(f'<td class="{"pass" if passed else "fail"}">{"PASS" if passed else "FAIL"}</td>')


def figure(svg: str | None, caption: str, *, missing: str = "") -> str:
    if svg is None:
        return f'<p class="note">{e(missing)}</p>' if missing else ""
    return f'<figure class="plot">{svg}<figcaption>{e(caption)}</figcaption></figure>'
