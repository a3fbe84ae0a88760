"""``confessional report FILE --send URL``: post a trace file's spans to an OTLP/HTTP
receiver and, when the receiver is Phoenix, annotate each confession's evaluated span."""

from __future__ import annotations

from pathlib import Path

from confessional._render import Printer

__all__ = ["send"]


def send(path: Path, url: str, out: Printer) -> None:
    """Send ``path`` to ``url``; in Phoenix, also add the confession annotations and say how
    many (label = verdict, score = grade; free text only if the file recorded content)."""
    from confessional._otlp_send import send_trace_file
    from confessional.annotations import (
        _phoenix_extra_installed,
        annotate_phoenix_from_trace_file,
        is_phoenix,
    )

    count = send_trace_file(path, url)
    out.line(f"Sent {count} span(s) to {url}.")
    if not is_phoenix(url):
        return
    if not _phoenix_extra_installed():
        out.line(
            "This is Phoenix: install confessional[phoenix] to add each confession as an "
            "annotation on its agent span.",
            style="yellow",
        )
        return
    annotated = annotate_phoenix_from_trace_file(path, url)
    out.line(
        f"Annotated {annotated} span(s) in Phoenix with their confession "
        "(label = verdict, score = grade): see the 'confession' annotation column."
    )
