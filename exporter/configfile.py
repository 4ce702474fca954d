"""Config files: bounded, safe YAML loading and one validating reader shared by both files.

Both the exporter config and the web config are read here, so both refuse the same hostile
YAML in the same way and report every bad field in one style: `FILE: path.to.field: problem,
got VALUE`, at most MAX_ERRORS_SHOWN of them, each value cut short.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import yaml
from yaml.composer import Composer, ComposerError
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

__all__ = [
    "MAX_DEPTH",
    "MAX_ERRORS_SHOWN",
    "MAX_FILE_BYTES",
    "MAX_INTEGER_DIGITS",
    "MAX_SCALAR_CHARS",
    "FieldReader",
    "Invalid",
    "YamlFileError",
    "describe_type",
    "describe_value",
    "join_path",
    "parse_yaml",
    "read_config_text",
    "read_yaml_file",
]

#: A config file is a few kilobytes; anything past this is refused before it is parsed.
MAX_FILE_BYTES: Final = 1 << 20
#: Mappings and lists nested deeper than this are refused (configs nest 4 levels).
MAX_DEPTH: Final = 64
#: One scalar (an inline PEM certificate chain included) may hold this many characters.
MAX_SCALAR_CHARS: Final = 65_536
#: Integers longer than this are refused (an unquoted 32-digit data store id still fits).
MAX_INTEGER_DIGITS: Final = 64
#: Errors beyond this many are counted, not listed.
MAX_ERRORS_SHOWN: Final = 20
#: A value shown in an error message is cut to this many characters.
MAX_VALUE_CHARS: Final = 40

T = TypeVar("T")

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS: Final = frozenset(_TAG + t for t in ("null", "bool", "int", "float", "str"))
_TAG_NAMES: Final = {
    _TAG + "timestamp": "timestamps are",
    _TAG + "merge": "merge keys (<<) are",
    _TAG + "binary": "!!binary values are",
    _TAG + "set": "!!set values are",
    _TAG + "omap": "!!omap values are",
    _TAG + "pairs": "!!pairs values are",
    _TAG + "value": "value keys (=) are",
}


class YamlFileError(ValueError):
    """The file cannot be read as a config file; the message is one line, without the file name."""


class Invalid(ValueError):
    """A field's value is wrong; `problem` says what form is wanted ("must be ...")."""

    def __init__(self, problem: str, show_value: bool = True) -> None:
        super().__init__(problem)
        self.problem = problem
        self.show_value = show_value


class _BoundedComposer(Composer, Resolver):
    """PyYAML's composer and resolver, refusing what is unsafe before anything is built.

    Aliases are refused outright (as many tools do for config files): a few hundred bytes of
    nested aliases expand to billions of nodes for whoever walks the result. Depth is checked
    before descending, so deep nesting can never reach Python's recursion limit. Timestamps
    resolve as plain strings, so a date where a number belongs fails validation with a message
    instead of constructing a datetime (which raises on 2001-13-45).
    """

    yaml_implicit_resolvers = {  # noqa: RUF012 - PyYAML's own class-level table
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TAG + "timestamp"]
        for first, resolvers in Resolver.yaml_implicit_resolvers.items()
    }

    _depth = 0
    peek_event: Callable[[], Any]  # from the parser it is mixed with

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        event: Any = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _refuse("aliases (*name) are not allowed", event.start_mark)
        if self._depth >= MAX_DEPTH:
            raise _refuse(f"exceeded maximum nesting depth ({MAX_DEPTH})", event.start_mark)
        self._depth += 1
        try:
            node = Composer.compose_node(self, parent, index)
        finally:
            self._depth -= 1
        if node is not None:
            self._check(node)
        return node

    def _check(self, node: Node) -> None:
        tag = node.tag
        if isinstance(node, ScalarNode):
            allowed = tag in _SCALAR_TAGS
        elif isinstance(node, SequenceNode):
            allowed = tag == _TAG + "seq"
        else:
            allowed = tag == _TAG + "map"
        if not allowed:
            short = "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag
            name = _TAG_NAMES.get(tag, f"the tag {_cut(short)} is")
            raise _refuse(f"{name} not allowed here", node.start_mark)
        if isinstance(node, ScalarNode):
            self._check_scalar(node)
        elif isinstance(node, MappingNode):
            seen: set[str] = set()
            for key, _ in node.value:
                if isinstance(key, ScalarNode):
                    if key.value in seen:
                        raise _refuse(f"duplicate key {_cut(key.value)}", key.start_mark)
                    seen.add(key.value)

    def _check_scalar(self, node: ScalarNode) -> None:
        value: str = node.value
        if len(value) > MAX_SCALAR_CHARS:
            raise _refuse(f"a value longer than {MAX_SCALAR_CHARS} characters", node.start_mark)
        if node.tag == _TAG + "int" and len(value.lstrip("+-")) > MAX_INTEGER_DIGITS:
            raise _refuse(f"an integer longer than {MAX_INTEGER_DIGITS} digits", node.start_mark)
        # An explicit tag (`!!int abc`) must fit its value, or construction fails outside YAML.
        implicit = self.resolve(ScalarNode, value, (True, False))  # type: ignore[no-untyped-call]
        if node.tag != _TAG + "str" and node.tag != implicit:
            raise _refuse(f"{_cut(value)} is not a valid {node.tag[len(_TAG) :]}", node.start_mark)


# PyYAML's own composer runs on libyaml's events where libyaml is there (4 to 5 times faster
# than the pure-Python parser on a 1 MiB file); libyaml's composer cannot be checked as it goes.
if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class _BoundedLoader(CParser, _BoundedComposer, SafeConstructor):
        get_single_node = Composer.get_single_node
        check_node = Composer.check_node
        get_node = Composer.get_node

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

else:  # pragma: no cover - wheels ship libyaml

    class _BoundedLoader(Reader, Scanner, Parser, _BoundedComposer, SafeConstructor):  # type: ignore[no-redef]
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)


def _refuse(problem: str, mark: Any) -> ComposerError:
    return ComposerError(None, None, problem, mark)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


def parse_yaml(text: str) -> object:
    """Parse YAML text into plain data (None, bool, int, float, str, list, dict).

    Raise YamlFileError, and nothing else, for text that is not YAML or not safe to load.
    """
    if len(text) > MAX_FILE_BYTES:
        raise YamlFileError(f"is larger than {MAX_FILE_BYTES // 1024} KiB")
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(text)
        return loader.get_single_data()
    except yaml.reader.ReaderError as exc:  # no line and column: a position
        raise YamlFileError(
            f"not valid YAML at character {exc.position + 1}: "
            f"character #x{exc.character:04x} is not allowed"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        context = getattr(exc, "context", None)
        if context and problem.startswith("but "):  # "but found another document" needs it
            problem = f"{context} {problem}"
        raise YamlFileError(f"not valid YAML{where}: {_one_line(str(problem))}") from None
    except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
        # The checks above leave none of these; a loader bug must still not become a traceback.
        raise YamlFileError(f"cannot be loaded: {type(exc).__name__}") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_config_text(path: str | os.PathLike[str]) -> str:
    """Read a UTF-8 file of at most MAX_FILE_BYTES; raise YamlFileError otherwise."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise YamlFileError(f"cannot read: {exc.strerror or type(exc).__name__}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise YamlFileError(f"is larger than {MAX_FILE_BYTES // 1024} KiB")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise YamlFileError("is not UTF-8 text") from None


def read_yaml_file(path: str | os.PathLike[str]) -> object:
    """Read a file with read_config_text and parse it with parse_yaml."""
    return parse_yaml(read_config_text(path))


def _one_line(text: str) -> str:
    return _cut(" ".join(text.split())) if len(text) > 200 else " ".join(text.split())


def describe_value(value: object) -> str:
    """Show a value in an error message: scalars cut short, containers by kind only."""
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        value = value[:MAX_VALUE_CHARS] + "..."
    return _cut(repr(value))


def describe_type(value: object) -> str:
    """Name a value's type, never its content (for files that may hold secrets)."""
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        dict: "mapping",
    }.get(type(value), type(value).__name__)


def join_path(where: str, key: object) -> str:
    """The dotted path of a key below `where`; odd keys are quoted and cut short."""
    name = key if isinstance(key, str) and key.isidentifier() else describe_value(key)
    name = _cut(str(name))
    return f"{where}.{name}" if where else name


class FieldReader:
    """Walks parsed YAML, collecting every bad field instead of stopping at the first.

    `describe` shows a wrong value: describe_value for the exporter config, describe_type for
    the web config, whose values may be passwords or private keys.
    """

    def __init__(self, source: str, describe: Callable[[object], str] = describe_value) -> None:
        self.source = source
        self.describe = describe
        self.errors: list[str] = []

    def error(
        self, where: str, problem: str, value: object = None, show_value: bool = False
    ) -> None:
        """Record one problem with the field at `where`."""
        text = f"{where or '(top level)'}: {problem}"
        if show_value:
            text += f", got {self.describe(value)}"
        # Keys come from the file too: a key with a line break must not break the one line.
        self.errors.append(
            text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
        )

    def mapping(
        self, value: object, where: str, known: tuple[str, ...] | frozenset[str]
    ) -> Mapping[str, Any]:
        """The mapping at `where` (empty when null); wrong types and unknown keys are errors."""
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.error(where, "must be a mapping", value, show_value=True)
            return {}
        expected = ", ".join(sorted(known) if isinstance(known, frozenset) else known)
        for key in value:
            if key not in known:
                self.error(join_path(where, key), f"unknown key (expected one of {expected})")
        return value

    def get(
        self,
        section: Mapping[str, Any],
        where: str,
        key: str,
        convert: Callable[[object], T],
        default: T,
    ) -> T:
        """The converted value of `key`, or the default when absent, null or invalid."""
        if key not in section or section[key] is None:
            return default
        return self.convert(section[key], join_path(where, key), convert, default)

    def convert(self, value: object, where: str, convert: Callable[[object], T], default: T) -> T:
        """Convert one value; an Invalid is recorded against `where` and gives the default."""
        try:
            return convert(value)
        except Invalid as exc:
            self.error(where, exc.problem, value, exc.show_value)
            return default

    def message(self) -> str:
        """All errors in one line, at most MAX_ERRORS_SHOWN listed."""
        shown = "; ".join(self.errors[:MAX_ERRORS_SHOWN])
        more = len(self.errors) - MAX_ERRORS_SHOWN
        if more > 0:
            shown += f"; and {more} more error{'s' if more != 1 else ''}"
        return f"{self.source}: {shown}"
