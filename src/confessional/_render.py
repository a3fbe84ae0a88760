"""Terminal output for the CLI: rich tables when rich is installed, aligned text otherwise.

The demo's core path must not depend on an optional extra, so everything here degrades
to plain text. Model-written text is never interpreted as rich markup.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
from collections.abc import Collection, Sequence
from typing import IO, Any


class Printer:
    """Lines, rules and tables on one stream."""

    def __init__(self, file: IO[str] | None = None, *, plain: bool = False) -> None:
        self.file = file if file is not None else sys.stdout
        # The terminal's width (80 when it is not a terminal): output must read well at 80.
        self.width = shutil.get_terminal_size((80, 24)).columns
        self._console: Any = None
        if not plain:
            try:
                from rich.console import Console
            except ImportError:
                pass
            else:
                self._console = Console(
                    file=self.file, width=self.width, highlight=False, soft_wrap=False
                )

    @property
    def console(self) -> Any:
        """The rich console, or ``None`` in plain mode."""
        return self._console

    def line(self, text: str = "", style: str | None = None, *, wrap: bool = True) -> None:
        """Print one line, folded to the width unless ``wrap=False`` (commands to copy)."""
        if self._console is not None:
            self._console.print(text, style=style, markup=False, soft_wrap=not wrap)
        elif wrap and text.strip():
            indent = text[: len(text) - len(text.lstrip())]
            print(
                textwrap.fill(
                    text, self.width, subsequent_indent=indent + "  ", break_long_words=False
                ),
                file=self.file,
            )
        else:
            print(text, file=self.file)

    def rule(self, title: str) -> None:
        if self._console is not None:
            from rich.rule import Rule
            from rich.text import Text

            self._console.print(Rule(Text(title, style="bold")))
        else:
            print(f"-- {title} " + "-" * max(0, 70 - len(title)), file=self.file)

    def table(
        self,
        columns: Sequence[str],
        rows: Sequence[Sequence[str]],
        *,
        title: str | None = None,
        row_styles: Sequence[str | None] | None = None,
        no_wrap: Collection[int] = (0,),
    ) -> None:
        """Print a table. Columns whose index is in ``no_wrap`` (default: the first, which
        names the row) are never split; the others fold to fit the width."""
        if self._console is not None:
            from rich.table import Table
            from rich.text import Text

            if title:
                self._console.print(Text(title, style="bold"))
            table = Table(show_lines=False)
            for index, column in enumerate(columns):
                table.add_column(column, overflow="fold", no_wrap=index in no_wrap)
            for i, row in enumerate(rows):
                style = row_styles[i] if row_styles else None
                table.add_row(*(Text(cell) for cell in row), style=style)
            self._console.print(table)
            return
        widths = [
            min(60, max(len(c), *(len(r[i]) for r in rows))) if rows else len(c)
            for i, c in enumerate(columns)
        ]
        if title:
            print(title, file=self.file)
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)), file=self.file)
        print("  ".join("-" * w for w in widths), file=self.file)
        for row in rows:
            cells = [
                (cell if len(cell) <= w else cell[: w - 1] + "…")
                for cell, w in zip(row, widths, strict=False)
            ]
            print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)), file=self.file)


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"
