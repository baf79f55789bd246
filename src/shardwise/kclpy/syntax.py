"""The Java ``.properties`` syntax, read exactly as ``java.util.Properties.load`` reads it.

``key = value``, ``key: value`` or ``key value``; ``#`` and ``!`` comment lines; a line ending in an odd number
of backslashes continues on the next one (whose leading blanks are dropped); ``\\t \\n \\r \\f \\uXXXX``
escapes, and a backslash before any other character stands for that character. Later keys win. A file is read
as UTF-8 (Java reads ISO 8859-1; both agree on the ASCII the keys are made of). What the MultiLangDaemon's keys
mean is :mod:`shardwise.kclpy.keys`; mapping them is :mod:`shardwise.kclpy.properties`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from shardwise.errors import ConfigurationError

__all__ = ["PropertyLine", "parse_properties", "parse_properties_lines", "read_properties_file"]

_BLANKS = " \t\f"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_SIMPLE_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


@dataclass(frozen=True, slots=True)
class PropertyLine:
    """One ``key = value`` entry and the (1-based) line it starts on."""

    key: str
    value: str
    line: int


def _continues(line: str) -> bool:
    """Whether a natural line ends in an odd number of backslashes (so the logical line goes on)."""
    count = len(line) - len(line.rstrip("\\"))
    return count % 2 == 1


def _logical_lines(text: str) -> list[tuple[int, str]]:
    natural = _LINE_BREAK.split(text)
    result: list[tuple[int, str]] = []
    index = 0
    while index < len(natural):
        line = natural[index].lstrip(_BLANKS)
        number = index + 1
        index += 1
        if not line or line[0] in "#!":
            continue  # a comment line never continues onto the next one
        pieces: list[str] = []
        while _continues(line):
            pieces.append(line[:-1])
            if index >= len(natural):
                line = ""
                break
            line = natural[index].lstrip(_BLANKS)
            index += 1
        pieces.append(line)
        result.append((number, "".join(pieces)))
    return result


def _unescape(text: str, line: int) -> str:
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        index += 1
        if char != "\\":
            out.append(char)
            continue
        if index >= len(text):
            break  # a lone backslash at the very end stands for nothing
        char = text[index]
        index += 1
        if char == "u":
            digits = text[index : index + 4]
            if len(digits) < 4 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise ConfigurationError(f"line {line}: malformed \\uxxxx escape \\u{digits} (four hex digits needed)")
            out.append(chr(int(digits, 16)))
            index += 4
        else:
            out.append(_SIMPLE_ESCAPES.get(char, char))
    joined = "".join(out)
    try:  # \\uD83D\\uDE00 is a surrogate pair in Java's UTF-16 strings: join it into one character
        return joined.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except UnicodeDecodeError:
        return joined


def _split_entry(logical: str, line: int) -> PropertyLine:
    length = len(logical)
    key_end = value_start = length
    has_separator = False
    index = 0
    while index < length:
        char = logical[index]
        if char == "\\":
            index += 2
            continue
        if char in "=:":
            key_end, value_start, has_separator = index, index + 1, True
            break
        if char in _BLANKS:
            key_end, value_start = index, index + 1
            break
        index += 1
    while value_start < length:
        char = logical[value_start]
        if char not in _BLANKS:
            if has_separator or char not in "=:":
                break
            has_separator = True
        value_start += 1
    return PropertyLine(_unescape(logical[:key_end], line), _unescape(logical[value_start:], line), line)


def parse_properties_lines(text: str) -> list[PropertyLine]:
    """Every entry of a ``.properties`` text, in file order (a key may repeat; the last one wins in Java)."""
    return [_split_entry(logical, number) for number, logical in _logical_lines(text)]


def parse_properties(text: str) -> dict[str, str]:
    """The entries of a ``.properties`` text as ``java.util.Properties.load`` reads them (later keys win)."""
    return {entry.key: entry.value for entry in parse_properties_lines(text)}


def read_properties_file(path: Path) -> str:
    """The text of a properties file: UTF-8 (with or without a BOM), else ISO 8859-1 as Java reads it."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(f"kclpy properties file {path} does not exist; check --kclpy-properties") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read kclpy properties file {path}: {exc}") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("iso-8859-1")  # what Properties.load(InputStream) assumes
