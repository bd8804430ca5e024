"""Find citation markers (``[1]``, ``[2][3]``, ``[1, 2]``) in an answer as it streams in.

The answer arrives as text deltas and a marker may be split across them (``"[1"`` then
``"2]"`` is ``[12]``), so the tracker is a small incremental parser: it keeps only the state
of the marker it is inside, never the text, and reports each marker the moment its ``]``
arrives. Offsets are Unicode code points over the whole answer so far.

Grammar: ``[`` then one or more numbers of 1-4 ASCII digits, separated by ``,`` with optional
spaces around it, then ``]`` -- at most ``MAX_MARKER_CHARS`` characters in all. Anything else
(``[a]``, ``[]``, ``[1.5]``, ``[12345]``, ``[ 1]``, an unclosed ``[``) is plain text.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from groundwire.server.pipeline.generation.types import Citation

# The longest marker we accept, brackets included. It bounds the parser's pending state, so an
# unclosed "[1, 2, 3, ..." is dropped after this many characters instead of growing forever.
MAX_MARKER_CHARS = 32
MAX_DIGITS = 4


class _State(enum.Enum):
    IDLE = enum.auto()
    OPENED = enum.auto()  # just after "["
    NUMBER = enum.auto()  # inside a number
    AFTER_NUMBER = enum.auto()  # spaces after a number, before the ","
    AFTER_COMMA = enum.auto()  # after "," (and perhaps spaces)


class CitationTracker:
    """Reports the citation markers of a streamed answer as soon as each is complete.

    Each character is looked at once (text outside markers is skipped with ``str.find``), so
    a ``feed`` costs O(len(delta)) and the pending state is at most one short marker.
    """

    def __init__(self, sources: Mapping[int, str]) -> None:
        """``sources`` maps each source number shown to the model to its chunk id."""
        self._sources = dict(sources)
        self._length = 0
        self._state = _State.IDLE
        self._start = 0  # offset of the pending marker's "["
        self._numbers: list[int] = []
        self._number = 0
        self._digits = 0

    @property
    def text_length(self) -> int:
        """Code points fed so far."""
        return self._length

    def feed(self, delta: str) -> list[Citation]:
        """The citations completed by ``delta``, in order of their position."""
        found: list[Citation] = []
        base = self._length
        i = 0
        n = len(delta)
        while i < n:
            if self._state is _State.IDLE:
                i = delta.find("[", i)
                if i < 0:
                    break
                self._open(base + i)
            else:
                self._step(delta[i], base + i, found)
            i += 1
        self._length = base + n
        return found

    def _open(self, offset: int) -> None:
        self._state = _State.OPENED
        self._start = offset
        self._numbers = []
        self._number = 0
        self._digits = 0

    def _step(self, char: str, offset: int, found: list[Citation]) -> None:
        if offset - self._start + 1 > MAX_MARKER_CHARS:
            self._fail(char, offset)
            return
        state = self._state
        is_digit = "0" <= char <= "9"
        if state is _State.OPENED or state is _State.AFTER_COMMA:
            if is_digit:
                self._begin_number(char)
            elif state is _State.AFTER_COMMA and char == " ":
                pass
            else:
                self._fail(char, offset)
        elif state is _State.NUMBER:
            if is_digit:
                if self._digits == MAX_DIGITS:
                    self._fail(char, offset)
                else:
                    self._number = self._number * 10 + (ord(char) - 48)
                    self._digits += 1
            elif char == "]":
                self._numbers.append(self._number)
                self._close(offset + 1, found)
            elif char == ",":
                self._numbers.append(self._number)
                self._state = _State.AFTER_COMMA
            elif char == " ":
                self._numbers.append(self._number)
                self._state = _State.AFTER_NUMBER
            else:
                self._fail(char, offset)
        elif state is _State.AFTER_NUMBER:
            if char == ",":
                self._state = _State.AFTER_COMMA
            elif char != " ":
                self._fail(char, offset)

    def _begin_number(self, char: str) -> None:
        self._state = _State.NUMBER
        self._number = ord(char) - 48
        self._digits = 1

    def _close(self, end: int, found: list[Citation]) -> None:
        for number in self._numbers:
            chunk_id = self._sources.get(number)
            found.append(
                Citation(
                    number=number,
                    start=self._start,
                    end=end,
                    chunk_id=chunk_id if chunk_id is not None else "",
                    valid=chunk_id is not None,
                )
            )
        self._state = _State.IDLE

    def _fail(self, char: str, offset: int) -> None:
        # The pending text holds no "[" but its first, so the character that broke the marker
        # is the only place a new marker can start: no rescanning is needed.
        if char == "[":
            self._open(offset)
        else:
            self._state = _State.IDLE
