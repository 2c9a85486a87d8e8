"""A table for live data: rows kept by key, updated in place, drawn line by line.

Owns row order, the cursor (and following the newest row), the column layout and drawing.
It knows nothing of records: the app hands it rows of cells (rich ``Text``) by key, and it
posts ``Highlighted`` when the row under the cursor changes.

Why not Textual's DataTable: its ``remove_row`` rebuilds the whole row index, once per row
removed, and a capped live stream removes its oldest row for every row it adds. Here removing
is one pass over the keys, and only the lines on screen are drawn.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, cast

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

Cells = Sequence[Text]


@dataclass(frozen=True, slots=True)
class Column:
    label: str
    max_width: int = 40  # sized to its content up to this; the last column takes what is left
    min_width: int = 4  # what it shrinks to when the terminal is too narrow


class LiveTable(ScrollView, can_focus=True):
    """Rows of cells by key; the header stays on the first line."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", "up", show=False),
        Binding("down", "move(1)", "down", show=False),
        Binding("pageup", "page(-1)", "page up", show=False),
        Binding("pagedown", "page(1)", "page down", show=False),
        Binding("home", "first", "first", show=False),
        Binding("end", "last", "newest", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "live-table--header",
        "live-table--cursor",
        "live-table--empty",
    }
    DEFAULT_CSS = """
    LiveTable { height: 1fr; scrollbar-size-horizontal: 0; }
    LiveTable > .live-table--header { text-style: bold; background: $panel; }
    LiveTable > .live-table--cursor { background: $panel-lighten-1; }
    LiveTable:focus > .live-table--cursor { background: $accent 30%; text-style: bold; }
    LiveTable > .live-table--empty { color: $text-muted; text-style: italic; }
    """

    class Highlighted(Message):
        """The row under the cursor changed (``key`` None: the table is empty)."""

        def __init__(self, table: LiveTable, key: Hashable | None) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> LiveTable:
            return self.table

    def __init__(
        self,
        columns: Sequence[Column],
        *,
        empty: str = "",
        follow: bool = False,
        ordered: bool = False,
        id: str | None = None,
    ) -> None:
        """``follow``: keep the cursor on the newest row while it is there. ``ordered``: keys
        are increasing ints, and a new row with a smaller key goes to its place, not the end."""
        super().__init__(id=id)
        self._columns = tuple(columns)
        self._empty = empty
        self._ordered = ordered
        self._keys: list[Hashable] = []
        self._cells: dict[Hashable, Cells] = {}
        self._positions: dict[Hashable, int] = {}
        self._measured = [len(column.label) for column in columns]
        self._column_layout: tuple[tuple[int, tuple[int, ...]], list[int]] | None = None
        self._cursor = 0
        self._following = follow
        self._highlighted: Hashable | None = None

    # -- content -----------------------------------------------------------------------------

    @property
    def keys(self) -> Sequence[Hashable]:
        """Row keys, top to bottom."""
        return self._keys

    @property
    def cursor_key(self) -> Hashable | None:
        return self._keys[self._cursor] if self._keys else None

    def upsert(self, rows: Iterable[tuple[Hashable, Cells]]) -> None:
        """Update rows in place by key; rows with new keys go to the bottom."""
        keys = self._keys
        for key, cells in rows:
            if key not in self._cells:
                if self._ordered and keys and cast(int, key) < cast(int, keys[-1]):
                    bisect.insort(cast(list[int], keys), cast(int, key))
                else:
                    keys.append(key)
            self._cells[key] = cells
            self._measure(cells)
        self._changed()

    def remove_rows(self, keys: Iterable[Hashable]) -> None:
        gone = {key for key in keys if key in self._cells}
        if not gone:
            return
        self._keys = [key for key in self._keys if key not in gone]
        for key in gone:
            del self._cells[key]
        self._changed()

    def replace_rows(self, rows: Iterable[tuple[Hashable, Cells]]) -> None:
        """Show exactly these rows, in this order (the cursor stays on its row if kept)."""
        self._keys = []
        self._cells = {}
        self._measured = [len(column.label) for column in self._columns]
        self.upsert(rows)

    def _measure(self, cells: Cells) -> None:
        measured = self._measured
        for index, cell in enumerate(cells):
            measured[index] = max(measured[index], cell.cell_len)

    def _changed(self) -> None:
        kept = self._highlighted  # the key the cursor was on before this change
        previous = self._cursor
        self._positions = {key: index for index, key in enumerate(self._keys)}
        last = len(self._keys) - 1
        if self._following:
            self._cursor = max(last, 0)
        elif kept in self._positions:
            self._cursor = self._positions[kept]
        else:
            self._cursor = max(min(previous, last), 0)
        self.virtual_size = Size(self.size.width, len(self._keys) + 1)
        self._show_cursor()
        self.refresh()

    # -- the cursor --------------------------------------------------------------------------

    def move_to(self, index: int) -> None:
        last = len(self._keys) - 1
        self._cursor = max(min(index, last), 0)
        self._following = self._cursor == last
        self._show_cursor()
        self.refresh()

    def action_move(self, delta: int) -> None:
        self.move_to(self._cursor + delta)

    def action_page(self, direction: int) -> None:
        self.move_to(self._cursor + direction * max(self.size.height - 2, 1))

    def action_first(self) -> None:
        self.move_to(0)

    def action_last(self) -> None:
        self.move_to(len(self._keys) - 1)

    def _show_cursor(self) -> None:
        body = max(self.size.height - 1, 1)  # the header takes a line
        top = int(self.scroll_offset.y)
        if self._cursor < top:
            self.scroll_to(y=self._cursor, animate=False, immediate=True)
        elif self._cursor >= top + body:
            self.scroll_to(y=self._cursor - body + 1, animate=False, immediate=True)
        key = self.cursor_key
        if key != self._highlighted:
            self._highlighted = key
            self.post_message(self.Highlighted(self, key))

    def on_click(self, event: events.Click) -> None:
        index = int(self.scroll_offset.y) + event.y - 1
        if 0 <= index < len(self._keys):
            self.move_to(index)

    def on_resize(self, event: events.Resize) -> None:
        self.virtual_size = Size(event.size.width, len(self._keys) + 1)
        self._show_cursor()

    # -- drawing -----------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        if y == 0:
            header = base + self.get_component_rich_style("live-table--header")
            return self._strip([Text(column.label) for column in self._columns], header, width)
        index = int(self.scroll_offset.y) + y - 1
        if index < len(self._keys):
            style = base
            if index == self._cursor:
                style += self.get_component_rich_style("live-table--cursor")
            return self._strip(self._cells[self._keys[index]], style, width)
        if index == 0 and self._empty:
            empty = base + self.get_component_rich_style("live-table--empty")
            return Strip(
                Text(self._empty, style=empty, end="").render(self.app.console)
            ).crop_extend(0, width, base)
        return Strip.blank(width, base)

    def _strip(self, cells: Cells, style: Style, width: int) -> Strip:
        line = Text(style=style, no_wrap=True, end="")
        for index, (cell, cell_width) in enumerate(zip(cells, self._layout(width), strict=False)):
            if index:
                line.append(" ")
            part = cell.copy()
            part.truncate(cell_width, overflow="ellipsis", pad=True)
            line.append_text(part)
        return Strip(line.render(self.app.console)).crop_extend(0, width, style)

    def _layout(self, width: int) -> list[int]:
        """Column widths: content-sized up to each maximum, the last takes the rest."""
        cache_key = (width, tuple(self._measured))
        if self._column_layout is not None and self._column_layout[0] == cache_key:
            return self._column_layout[1]
        columns = self._columns
        widths = [
            min(measured, column.max_width)
            for measured, column in zip(self._measured, columns, strict=True)
        ]
        gaps = len(columns) - 1
        widths[-1] = max(width - gaps - sum(widths[:-1]), columns[-1].min_width)
        # Too narrow for that: take from the widest columns, down to their minimum widths.
        over = sum(widths) + gaps - width
        while over > 0:
            index = max(range(len(widths)), key=lambda i: widths[i] - columns[i].min_width)
            if widths[index] <= columns[index].min_width:
                break
            widths[index] -= 1
            over -= 1
        self._column_layout = (cache_key, widths)
        return widths
