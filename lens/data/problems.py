"""Collect every problem with the input before failing, so one run names all offending files."""

from __future__ import annotations

from lens.errors import LensError

SHOWN = 20  # files listed per kind of problem; the rest are counted


class Problems:
    """Problems grouped by kind ("unreadable or corrupt", "wrong shape", ...), in order found."""

    def __init__(self) -> None:
        self._by_kind: dict[str, list[str]] = {}

    def add(self, kind: str, item: str) -> None:
        self._by_kind.setdefault(kind, []).append(item)

    def __bool__(self) -> bool:
        return bool(self._by_kind)

    def count(self, kind: str | None = None) -> int:
        if kind is None:
            return sum(len(items) for items in self._by_kind.values())
        return len(self._by_kind.get(kind, []))

    def message(self, hint: str = "") -> str:
        lines: list[str] = []
        for kind, items in self._by_kind.items():
            lines.append(f"{kind} ({len(items)}):")
            lines += [f"  {item}" for item in items[:SHOWN]]
            if len(items) > SHOWN:
                lines.append(f"  ... and {len(items) - SHOWN} more")
        if hint:
            lines.append(hint)
        return "\n".join(lines)

    def raise_if_any(self, hint: str = "") -> None:
        if self:
            raise LensError(self.message(hint))


def listing(items: list[str], shown: int = SHOWN) -> list[str]:
    """The first ``shown`` items indented, then a count of the rest (for summaries)."""
    lines = [f"  {item}" for item in items[:shown]]
    if len(items) > shown:
        lines.append(f"  ... and {len(items) - shown} more")
    return lines
