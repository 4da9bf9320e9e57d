"""YAML text to data, safely: unique keys, bounded nesting and alias expansion (a file can neither hang nor crash
the validation), and the parser's complaint as a located problem."""

from __future__ import annotations

from typing import Any

import yaml

from drwatch.core.errors import ConfigProblem

MAX_DEPTH = 64  # nesting; a real config is under 10 deep
_MAX_EXPANDED = 1_000_000  # values after alias expansion, when aliases multiply the document over 10x


def _check_shape(root: yaml.Node) -> None:
    """Refuse what would hang or crash the validation: nesting deeper than MAX_DEPTH (or a recursive
    alias) and alias bombs ("billion laughs": a few lines that expand to billions of values)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 0, False)]
    while stack:
        node, depth, done = stack.pop()
        if isinstance(node, yaml.SequenceNode):
            children: list[yaml.Node] = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        if done:
            sizes[id(node)] = size = 1 + sum(sizes[id(c)] for c in children)
            if size > _MAX_EXPANDED and size > 10 * len(sizes):
                raise yaml.composer.ComposerError(None, None, f"aliases expand this document to over "
                                                  f"{_MAX_EXPANDED:,} values", node.start_mark)
            continue
        if depth > MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels (or an "
                                              "alias refers to itself)", node.start_mark)
        if id(node) not in sizes:
            stack.append((node, depth, True))
            stack.extend((c, depth + 1, False) for c in children if id(c) not in sizes)


class _UniqueKeys(yaml.constructor.SafeConstructor):
    """Rejects a key given twice in one mapping (plain YAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue  # merge keys (`<<`) may legitimately be overridden
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None,
                    f"key {key!r} appears twice in one mapping (first on line {seen[key] + 1}); "
                    "YAML would keep only the last: merge them",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


class UniqueKeyLoader(_UniqueKeys, yaml.SafeLoader):
    """The pure-Python SafeLoader with unique keys, refusing documents nested too deeply or inflated by aliases
    (see _check_shape). Its error messages are the most precise (they name the character, the alias)."""

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        super().fetch_flow_collection_start(TokenClass)
        if self.flow_level > MAX_DEPTH:  # the scanner slows down quadratically with [[[[...: stop early
            raise yaml.scanner.ScannerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                            self.get_mark())

    def compose_document(self) -> yaml.Node | None:
        node: yaml.Node | None = super().compose_document()
        if node is not None:
            _check_shape(node)
        return node


_LIBYAML = bool(getattr(yaml, "__with_libyaml__", False))
# Broken files up to this size are parsed again by the Python loader for its more precise message; the
# libyaml loader parses ~10x faster (a 10 MB file: ~2 s instead of ~15 s).
_REPARSE_MAX = 1 << 20

if _LIBYAML:
    from yaml._yaml import CParser

    class _CUniqueKeyLoader(_UniqueKeys, yaml.CSafeLoader):
        """libyaml's loader with unique keys and _check_shape. libyaml composes nodes recursively in C (a
        document nested 100k deep crashes the process): _check_depth runs first. Without aliases the node
        tree is no larger than the text and no deeper than _check_depth allows: _check_shape only runs with them."""

        aliases = True

        def get_single_node(self) -> yaml.Node | None:
            node: yaml.Node | None = super().get_single_node()
            if node is not None and self.aliases:
                _check_shape(node)
            return node

    def _check_depth(text: str) -> bool:
        """Refuse nesting deeper than MAX_DEPTH from libyaml's event stream (iterative: no recursion); whether
        the document uses aliases."""
        parser = CParser(text)
        aliases = False
        try:
            depth = 0
            while (event := parser.get_event()) is not None:
                if isinstance(event, yaml.AliasEvent):
                    aliases = True
                elif isinstance(event, yaml.CollectionStartEvent):
                    depth += 1
                    if depth > MAX_DEPTH + 1:  # the root collection is depth 1
                        raise yaml.parser.ParserError(None, None, f"nested deeper than {MAX_DEPTH} levels (or "
                                                      "an alias refers to itself)", event.start_mark)  # type: ignore[arg-type]
                elif isinstance(event, yaml.CollectionEndEvent):
                    depth -= 1
        finally:
            parser.dispose()
        return aliases


def load_yaml(text: str) -> Any:
    """YAML text to data with the checks of UniqueKeyLoader, by libyaml where it is there (fast), else by the
    Python loader; a broken file of normal size is reported with the Python loader's message."""
    if not _LIBYAML:
        return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects
    try:
        loader = _CUniqueKeyLoader(text)  # a CSafeLoader subclass: no arbitrary objects
        try:
            loader.aliases = _check_depth(text)
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError:
        if len(text) > _REPARSE_MAX:
            raise
    return yaml.load(text, Loader=UniqueKeyLoader)  # raises the same error, said more precisely



def yaml_problem(exc: yaml.YAMLError) -> ConfigProblem:
    """The parser's complaint, located where it blames first: PyYAML's context mark ("while scanning a quoted
    scalar ... line 14": where the construct opened) comes before its problem mark ("found unexpected end of
    stream ... line 32": where it gave up), and both are given."""
    def at(mark: Any) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}"

    problem = getattr(exc, "problem", None) or str(exc)
    mark, context, context_mark = (getattr(exc, n, None) for n in ("problem_mark", "context", "context_mark"))
    if context_mark is not None and (mark is None or (context_mark.line, context_mark.column) !=
                                     (mark.line, mark.column)):
        later = f" at {at(mark)}" if mark is not None else ""
        return ConfigProblem(at(context_mark), f"malformed YAML: {context or 'here'}: {problem}{later}")
    where = at(mark) if mark is not None else ""
    return ConfigProblem(where, f"malformed YAML: {f'{context}: ' if context else ''}{problem}")
