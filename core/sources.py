"""Reading published edit datasets: where the file comes from, and checking every record.

A task's ``--data`` may be a local file (JSON list or JSONL), an http(s) URL (downloaded once into
the cache) or a Hugging Face datasets id (``owner/name``, optionally ``owner/name:split``).
Records are validated field by field; an error names the source, the record index and the field.
Nothing is dropped silently: with ``--lenient`` a bad record is skipped, counted and its reason
logged; without it the first bad record stops the load.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import string
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cache import atomic_write_bytes, cache_root, safe_name

log = logging.getLogger(__name__)


class RecordError(ValueError):
    """A record that does not fit its schema; the message names source, record and field."""


@dataclass(frozen=True)
class Where:
    """Where a record came from, for error messages."""

    source: str
    index: int  # 0-based record index, or the 1-based line number when ``by_line``
    by_line: bool = False

    def __str__(self) -> str:
        return (f"{self.source}:{self.index}" if self.by_line
                else f"{self.source}: record {self.index}")

    def error(self, field_name: str, problem: str) -> RecordError:
        """The error for one field; a problem that quotes a huge value is cut to one line's worth
        (a 9.6 MB prompt once made a 9.6 MB error)."""
        if len(problem) > 300:
            problem = problem[:300] + f"… ({len(problem):,} characters)"
        return RecordError(f"{self}: field {field_name!r}: {problem}")


class Fields:
    """Typed access to one raw record, raising errors that name the field."""

    def __init__(self, obj: Any, where: Where, prefix: str = "") -> None:
        if not isinstance(obj, dict):
            raise RecordError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        self.obj, self.where, self.prefix = obj, where, prefix

    def _name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def has(self, key: str) -> bool:
        return self.obj.get(key) is not None

    def first_present(self, *keys: str) -> str:
        """The first of several accepted spellings of a field that the record has."""
        for key in keys:
            if self.has(key):
                return key
        raise self.where.error(self._name(keys[0]),
                               f"is required (accepted names: {', '.join(keys)})")

    def str(self, *keys: str) -> str:
        key = self.first_present(*keys)
        value = self.obj[key]
        if not isinstance(value, str) or not value.strip():
            raise self.where.error(self._name(key), f"must be a non-empty string, got {value!r}")
        return value

    def optional_str(self, *keys: str) -> str | None:
        return self.str(*keys) if any(self.has(k) for k in keys) else None

    def str_list(self, *keys: str, allow_str: bool = False) -> list[str]:
        key = self.first_present(*keys)
        value = self.obj[key]
        if allow_str and isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.where.error(self._name(key), "must be a list of non-empty strings")
        return value

    def first_str(self, *keys: str, allow_str: bool = False) -> str:
        """The first of a list of strings (or of a lone string where ``allow_str``); an empty list
        is an error naming the field, not an IndexError later."""
        values = self.str_list(*keys, allow_str=allow_str)
        if not values:
            raise self.where.error(self._name(self.first_present(*keys)),
                                   "must hold at least one string, got an empty list")
        return values[0]

    def subject_template(self, key: str) -> str:
        """A prompt template with exactly one ``{}`` for the subject (``{{`` for a literal
        brace): two slots, a named one or a lone brace would fail or fill wrongly later."""
        template = self.str(key)
        try:
            slots = [(name, spec, conversion) for _, name, spec, conversion
                     in string.Formatter().parse(template) if name is not None]
        except ValueError:
            slots = None
        if slots != [("", "", None)]:
            raise self.where.error(self._name(key), "must hold exactly one '{}' for the subject "
                                   f"(write '{{{{' for a literal brace), got {template!r}")
        return template

    def nested(self, key: str) -> Fields:
        if not isinstance(self.obj.get(key), dict):
            raise self.where.error(self._name(key), "must be an object")
        return Fields(self.obj[key], self.where, prefix=f"{self._name(key)}.")


@dataclass
class LoadReport:
    """What a lenient load skipped, and why."""

    skipped: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, error: RecordError) -> None:
        reason = str(error).split(": field ", 1)[-1]
        self.skipped[reason] += 1
        self.examples.setdefault(reason, str(error))

    @property
    def total(self) -> int:
        return sum(self.skipped.values())


def is_url(data: str) -> bool:
    return data.startswith(("http://", "https://"))


def local_file(source: str, option: str, cache_dir: Path | None = None) -> Path:
    """A setting's path or URL as a local file: a URL is fetched once (``download``), a path must
    exist; the error names the setting (``option``)."""
    if is_url(source):
        return download(source, cache_dir)
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{option}: {source} does not exist")
    return path


def _download_name(url: str) -> str:
    """The file name a download is cached under: the URL path's last part, made harmless."""
    last = urllib.parse.urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
    return safe_name(last) if last not in ("", ".", "..") else "data"


def _looks_like_html(body: bytes, content_type: str) -> bool:
    head = body[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return "html" in content_type.lower() or head.startswith((b"<!doctype html", b"<html"))


def download(url: str, cache_dir: Path | None = None, timeout: float = 60.0,
             validate: Callable[[bytes], object] | None = None) -> Path:
    """Fetch ``url`` once into ``CACHE/downloads``; later calls reuse the file without the network.

    Only a response that ``validate`` accepts is cached (an HTML page - a login wall, an error page,
    a moved file - never is), so a bad download is refused now and fetched afresh next time."""
    target = ((cache_dir or cache_root()) / "downloads"
              / hashlib.sha256(url.encode()).hexdigest()[:12] / _download_name(url))
    if target.is_file():
        log.info("using the cached download of %s (%s)", url, target)
        return target
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http(s) only, checked)
            body = response.read()
            content_type = response.headers.get("Content-Type", "")
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(f"--data {url}: download failed ({exc}); "
                                "pass a local file instead") from None
    if _looks_like_html(body, content_type):
        raise RecordError(f"--data {url}: the server sent an HTML page, not a data file (a wrong "
                          "or moved URL, or one behind a login); nothing was cached - check the "
                          "URL or pass a local file")
    if validate is not None:
        validate(body)
    atomic_write_bytes(target, body)
    return target


def _decode(data: bytes, source: str) -> str:
    """UTF-8 text (a byte-order mark is dropped); anything else is an error naming line and byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise RecordError(f"{source}:{line}: not UTF-8 text (byte {exc.start} is "
                          f"{data[exc.start]:#04x}); save the file as UTF-8") from None


def read_json_object(path: Path, what: str) -> dict:
    """A local JSON file that must hold one object (a task's side file: snippets, a vocabulary);
    anything else is a :class:`RecordError` naming ``what``, the file and the line."""
    try:
        value = strict_json(read_text(path))
    except json.JSONDecodeError as exc:
        raise RecordError(f"{what} {path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    except StrictJSONError as exc:
        raise RecordError(f"{what} {path}: {exc}") from None
    if not isinstance(value, dict):
        raise RecordError(f"{what} {path}: expected a JSON object, found a "
                          f"{type(value).__name__}")
    return value


def read_text(path: Path) -> str:
    """A local text file as UTF-8, with an error naming the file, line and byte where it is not."""
    return _decode(path.read_bytes(), str(path))


@dataclass(frozen=True)
class RawRecords:
    """The records of one source, before parsing, and where each came from."""

    source: str  # a name for messages: the path, URL or datasets id
    items: list[Any]
    lines: list[int] | None = None  # the 1-based line of each item, for JSON Lines

    def where(self, index: int) -> Where:
        if self.lines is not None:
            return Where(self.source, self.lines[index], by_line=True)
        return Where(self.source, index)


class StrictJSONError(ValueError):
    """JSON that parses but would be read wrong: a key given twice (the last would win
    silently), NaN or Infinity (no JSON number; they break scores, hashes and the store), or a
    lone surrogate escape (text no encoder can write)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise StrictJSONError(f"the key {key!r} appears twice in one object")
        found[key] = value
    return found


def _no_constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not a JSON number; write a number or null")


def _surrogate_at(value: Any, path: str = "") -> str | None:
    """The field (``a.b[2]``) of the first string in ``value`` with a lone surrogate."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "the value"
        return None
    items = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ())
    for key, item in items:
        where = (f"{path}.{key}" if path else str(key)) if isinstance(value, dict) \
            else f"{path}[{key}]"
        if isinstance(value, dict) and _surrogate_at(key) is not None:
            return where + " (its name)"
        found = _surrogate_at(item, where)
        if found is not None:
            return found
    return None


#: the decoder :func:`strict_json` and :func:`iter_json_records` share
STRICT_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant)


def check_text(value: Any) -> None:
    """Refuse a decoded value holding a lone surrogate (see :class:`StrictJSONError`)."""
    field_name = _surrogate_at(value)
    if field_name is not None:
        raise StrictJSONError(f"field {field_name!r} holds a lone surrogate escape (\\udXXX "
                              "without its pair), which is not text")


def strict_json(text: str) -> Any:
    """``json.loads`` that refuses what :class:`StrictJSONError` describes, naming the key or
    field; a syntax error stays a ``json.JSONDecodeError``."""
    value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    if "\\u" in text:  # only an escape can make a lone surrogate out of UTF-8 text
        check_text(value)
    return value


def parse_records(data: bytes, source: str) -> RawRecords:
    """A JSON list, or JSON Lines (one object per line), told apart by content rather than
    extension. A byte-order mark is accepted in both; text that is not UTF-8 is an error naming
    line and byte."""
    text = _decode(data, source)
    if text.lstrip().startswith("["):
        try:
            parsed = strict_json(text)
        except json.JSONDecodeError as exc:
            raise RecordError(f"{source}: not valid JSON: {exc.msg} "
                              f"(line {exc.lineno}, column {exc.colno})") from None
        except StrictJSONError as exc:
            raise RecordError(f"{source}: {exc}") from None
        return RawRecords(source, parsed)
    items, lines = [], []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                items.append(strict_json(line))
            except json.JSONDecodeError as exc:
                raise RecordError(f"{source}:{line_no}: not valid JSON: {exc.msg} "
                                  f"(column {exc.colno})") from None
            except StrictJSONError as exc:
                raise RecordError(f"{source}:{line_no}: {exc}") from None
            lines.append(line_no)
    if not items and text.strip():
        raise RecordError(f"{source}: neither a JSON list nor JSON Lines")
    return RawRecords(source, items, lines)


def read_records(path: Path, source: str | None = None) -> RawRecords:
    """The raw records of a local JSON or JSON Lines file (see :func:`parse_records`)."""
    source = source or str(path)
    if not path.is_file():
        problem = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"data file {path} {problem}")
    return parse_records(path.read_bytes(), source)


def iter_json_records(path: Path, source: str | None = None, chunk_size: int = 1 << 20,
                      max_record_bytes: int = 64 << 20) -> Iterator[tuple[Where, Any]]:
    """The raw records of a local JSON list or JSON Lines file, one at a time, each with where it
    came from: a file far larger than memory (UltraEditBench's 801 MB list) is read in chunks of
    ``chunk_size`` characters and never held whole.

    The list is read by a hand-written loop over :data:`STRICT_DECODER` (the same rules as
    :func:`strict_json`: a key given twice, NaN and lone surrogates are refused); a record that
    does not parse within ``max_record_bytes`` characters is refused rather than read to the end
    of the file. Errors name the file and the record (JSON Lines: the line)."""
    source = source or str(path)
    if not path.is_file():
        problem = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"data file {path} {problem}")
    with path.open("rb") as handle:
        head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        handle.seek(0)
        if head.startswith(b"["):
            yield from _stream_list(handle, source, chunk_size, max_record_bytes)
        else:
            yield from _stream_lines(handle, source)


def _stream_lines(handle, source: str) -> Iterator[tuple[Where, Any]]:
    found = False
    for line_no, raw_line in enumerate(handle, start=1):
        try:
            text = raw_line.decode("utf-8-sig" if line_no == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise RecordError(f"{source}:{line_no}: not UTF-8 text (byte {exc.start} of the "
                              "line); save the file as UTF-8") from None
        if not text.strip():
            continue
        try:
            value = strict_json(text)
        except json.JSONDecodeError as exc:
            raise RecordError(f"{source}:{line_no}: not valid JSON: {exc.msg} "
                              f"(column {exc.colno})") from None
        except StrictJSONError as exc:
            raise RecordError(f"{source}:{line_no}: {exc}") from None
        found = True
        yield Where(source, line_no, by_line=True), value
    if not found:
        raise RecordError(f"{source}: no usable records")


class _Chunks:
    """Text of a binary file, decoded as UTF-8 a chunk at a time into a buffer that drops what
    has been consumed."""

    def __init__(self, handle, source: str, chunk_size: int) -> None:
        self.handle, self.source, self.size = handle, source, chunk_size
        self.decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.text, self.pos, self.eof, self.read_bytes = "", 0, False, 0

    def more(self) -> bool:
        """Append the next chunk; False at the end of the file."""
        if self.eof:
            return False
        data = self.handle.read(self.size)
        try:
            added = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise RecordError(f"{self.source}: not UTF-8 text (byte {self.read_bytes + exc.start}"
                              " of the file); save the file as UTF-8") from None
        self.read_bytes += len(data)
        self.eof = not data
        if self.pos > self.size:  # drop the consumed text, so the buffer stays about a chunk
            self.text, self.pos = self.text[self.pos:], 0
        self.text += added
        return bool(data) or bool(added)

    def skip_space(self) -> str:
        """The next character that is not white space ('' at the end of the file)."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.more():
                return ""


def _stream_list(handle, source: str, chunk_size: int,
                 max_record_bytes: int) -> Iterator[tuple[Where, Any]]:
    chunks = _Chunks(handle, source, chunk_size)
    chunks.skip_space()
    chunks.pos += 1  # the opening bracket
    index = 0
    while True:
        found = chunks.skip_space()
        if found == "]":
            chunks.pos += 1
            break
        if not found:
            raise RecordError(f"{source}: the JSON list ends without its closing ']' "
                              f"(after {index} records)")
        if index:
            if found != ",":
                raise RecordError(f"{source}: record {index}: expected ',' or ']' after the "
                                  f"record before it, found {found!r}")
            chunks.pos += 1
            found = chunks.skip_space()
        if not found:
            raise RecordError(f"{source}: the JSON list ends without its closing ']' "
                              f"(after {index} records)")
        while True:
            try:
                value, end = STRICT_DECODER.raw_decode(chunks.text, chunks.pos)
            except json.JSONDecodeError as exc:
                if len(chunks.text) - chunks.pos < max_record_bytes and chunks.more():
                    continue  # the record may go on in the next chunk
                raise RecordError(f"{source}: record {index}: not valid JSON: {exc.msg}") \
                    from None
            except StrictJSONError as exc:
                raise RecordError(f"{source}: record {index}: {exc}") from None
            if end == len(chunks.text) and chunks.more():
                continue  # a number cut by the chunk's end would parse short
            break
        if "\\u" in chunks.text[chunks.pos:end]:
            try:
                check_text(value)
            except StrictJSONError as exc:
                raise RecordError(f"{source}: record {index}: {exc}") from None
        chunks.pos = end
        yield Where(source, index), value
        index += 1
    if chunks.skip_space():
        raise RecordError(f"{source}: text after the list's closing ']' (after {index} records)")
    if not index:
        raise RecordError(f"{source}: no usable records")


def read_json_records(path: Path) -> list[Any]:
    """The raw records of a local JSON or JSON Lines file."""
    return read_records(path).items


def load_hub_dataset(dataset_id: str) -> list[dict]:
    """Records of a Hugging Face datasets id, ``owner/name`` or ``owner/name:split`` (default
    split: train)."""
    try:
        import datasets
    except ImportError:
        raise FileNotFoundError(f"--data {dataset_id}: not a local file or URL, and reading a "
                                "Hugging Face dataset needs `pip install datasets`") from None
    name, _, split = dataset_id.partition(":")
    try:
        return [dict(row) for row in datasets.load_dataset(name, split=split or "train")]
    except Exception as exc:  # the hub raises many types; the user needs the reason, not the type
        raise FileNotFoundError(f"--data {dataset_id}: could not load it as a Hugging Face "
                                f"dataset ({exc})") from exc


def read_source(data: str, cache_dir: Path | None = None) -> RawRecords:
    """The raw records of a path, URL or datasets id."""
    path = Path(data).expanduser()
    if path.exists():
        return read_records(path)
    if is_url(data):
        cached = download(data, cache_dir, validate=lambda body: parse_records(body, data))
        try:
            return read_records(cached, source=data)
        except RecordError:
            # a bad copy cached by an older editbench: fetched afresh next time
            cached.unlink(missing_ok=True)
            raise
    if "/" in data and not data.startswith((".", "/", "~")):
        return RawRecords(data, load_hub_dataset(data))
    raise FileNotFoundError(f"--data {data}: no such file, and it is neither an http(s) URL "
                            "nor a datasets id")


class _Read(dict):
    """A raw JSON object that remembers which keys a loader read, so that a field the loader does
    not use is reported rather than silently dropped."""

    def __init__(self, data: Any = (), path: str = "") -> None:
        # ``dataclasses.asdict`` copies a dict by calling its type with (key, value) pairs: a
        # record whose ``extra`` holds a raw object then hashes and stores like any other
        super().__init__({k: _track(v, f"{path}{k}") for k, v in dict(data).items()})
        self.path, self.read = path, set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key) -> bool:
        self.read.add(key)
        return super().__contains__(key)

    def unused(self) -> list[str]:
        """Keys never read; inside a value the loader took whole (read none of its keys),
        nothing."""
        out = [f"{self.path}{k}" for k in self if k not in self.read]
        for key in self.read & set(self):
            for child in _objects(dict.__getitem__(self, key)):
                if child.read:
                    out += child.unused()
        return out


def _track(value: Any, path: str) -> Any:
    if isinstance(value, dict):
        return _Read(value, path + ".")
    if isinstance(value, list):
        return [_track(v, path + "[]") for v in value]
    return value


def _objects(value: Any) -> list[_Read]:
    if isinstance(value, _Read):
        return [value]
    if isinstance(value, list):
        return [o for v in value for o in _objects(v)]
    return []


def parse_all(raw: RawRecords, parse: Callable[[Any, Where], Any],
              lenient: bool) -> tuple[list[Any], LoadReport]:
    """Parse every raw record; strict mode raises on the first bad one, lenient mode counts it.
    Fields of the records that the loader never reads are named in one warning, with how many
    records had each: the published formats carry more than a loader scores, and a reader must be
    told what was left out."""
    if not isinstance(raw.items, list):
        raise RecordError(f"{raw.source}: expected a JSON list of records, "
                          f"got a {type(raw.items).__name__}")
    report = LoadReport()
    parsed = []
    unused: Counter = Counter()
    for index, obj in enumerate(raw.items):
        try:
            parsed.append(parse_one(obj, raw.where(index), parse, unused))
        except RecordError as error:
            if not lenient:
                raise
            report.add(error)
    warn_load(raw.source, report, unused)
    if not parsed:
        raise RecordError(f"{raw.source}: no usable records")
    return parsed, report


def warn_load(source: str, report: LoadReport, unused: Counter) -> None:
    """The load's two warnings: what lenient loading skipped, and the fields no loader read."""
    if report.total:
        log.warning("%s: skipped %d malformed records (lenient loading): %s", source,
                    report.total,
                    "; ".join(f"{n} x {reason}" for reason, n in report.skipped.most_common()))
    if unused:
        log.warning("%s: fields this loader does not use, left out of the edits: %s", source,
                    ", ".join(f"{name} ({n} records)" for name, n in sorted(unused.items())))


def parse_one(obj: Any, where: Where, parse: Callable[[Any, Where], Any],
              unused: Counter) -> Any:
    """One raw record through ``parse``, counting into ``unused`` the fields it did not read
    (what :func:`parse_all` does for each record, for loaders that stream)."""
    tracked = _Read(obj) if isinstance(obj, dict) else obj
    parsed = parse(tracked, where)
    if isinstance(tracked, _Read):
        unused.update(tracked.unused())
    return parsed
