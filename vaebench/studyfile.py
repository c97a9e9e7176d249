"""Study files as YAML: a strict loader, and pydantic's errors told in the file's own keys."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from vaebench.errors import InputError
from vaebench.validate import SettingError, shown

MAX_BYTES = 1_000_000  # a study file is a few settings; refused before parsing (PyYAML's pure-Python scanner is slow)


class ValueProblem(yaml.constructor.ConstructorError):
    """A scalar its tag cannot hold (`2024-02-30`, `!!int abc`, an integer of 5,000 digits),
    with the key path of the setting it was under."""

    def __init__(self, where: str, problem: str, mark: yaml.Mark) -> None:
        super().__init__(None, None, problem, mark)
        self.where = where


class StudyLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader that refuses duplicate keys (the later one would silently win),
    nesting deeper than MAX_DEPTH (PyYAML composes recursively: RecursionError), more than
    MAX_VALUES values, counted as they are met (a long list is refused before it is all built)
    with aliases counted as what they expand to (or refused if they refer to themselves), and
    that tells a scalar its tag cannot hold as a ValueProblem rather than a ValueError."""

    MAX_DEPTH = 20
    MAX_VALUES = 100_000

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        alias = self.check_event(yaml.AliasEvent)
        mark = self.peek_event().start_mark
        self.depth = getattr(self, "depth", 0) + 1
        try:
            if self.depth > self.MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {self.MAX_DEPTH} levels deep", mark)
            if not alias:
                self._count(1, mark)
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if alias:
            if not hasattr(node, "n_values"):
                raise yaml.composer.ComposerError(None, None, "an alias that refers to itself", mark)
            self._count(node.n_values, mark)
        else:  # what an alias of this node expands to
            children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else (
                node.value if isinstance(node, yaml.SequenceNode) else [])
            node.n_values = 1 + sum(child.n_values for child in children)
        return node

    def _count(self, values: int, mark: yaml.Mark) -> None:
        self.n_values = getattr(self, "n_values", 0) + values
        if self.n_values > self.MAX_VALUES:
            raise yaml.composer.ComposerError(None, None, f"more than {self.MAX_VALUES} values", mark)

    def construct_document(self, node: yaml.Node) -> Any:
        self.root = node
        return super().construct_document(node)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:  # int(), float(), datetime.date() of the scalar's text
            value = str(node.value) if len(str(node.value)) <= 24 else f"{str(node.value)[:20]}..."
            reason = str(exc).split(";")[0]
            raise ValueProblem(key_path(self.root, node), f"{value} is not a valid {node.tag.rsplit(':', 1)[-1]} "
                               f"({reason})", node.start_mark) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                earlier = first.setdefault(key, key_node)
            except TypeError:  # unhashable: the base class says so
                continue
            if earlier is not key_node:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {shown(key)} (first on line {earlier.start_mark.line + 1})",
                    key_node.start_mark)
        return super().construct_mapping(node, deep)


def key_path(root: yaml.Node, target: yaml.Node) -> str:
    """The keys (`model.latent_dim`, `search.space.seed[2]`) that lead from `root` to `target`."""
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, where = stack.pop()
        if node is target:
            return where.removeprefix(".")
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                step = f".{key.value}" if isinstance(key, yaml.ScalarNode) else ".?"
                if key is target:
                    return (where + step).removeprefix(".")
                stack.append((value, where + step))
        elif isinstance(node, yaml.SequenceNode):
            stack += [(item, f"{where}[{i}]") for i, item in enumerate(node.value)]
    return ""


def too_many(text: str) -> None:
    """Refuse a document of more than MAX_VALUES nodes by counting libyaml's parse events, about
    100 times faster than StudyLoader, which counts too (and expands aliases) but in Python.
    Malformed YAML is left to StudyLoader, whose messages are the same with or without libyaml."""
    parser = getattr(yaml, "CSafeLoader", None)
    if parser is None:
        return
    try:
        for count, event in enumerate((e for e in yaml.parse(text, parser) if isinstance(e, yaml.NodeEvent)), 1):
            if count > StudyLoader.MAX_VALUES:
                raise yaml.composer.ComposerError(None, None, f"more than {StudyLoader.MAX_VALUES} values",
                                                  event.start_mark)
    except yaml.composer.ComposerError:
        raise
    except yaml.YAMLError:
        return


def read_study_file(path: Path) -> Any:
    """The YAML document of a study file; any problem (too large, not UTF-8, malformed, a value
    its tag cannot hold) is one InputError naming the file and, where known, line and key."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
        if len(data) > MAX_BYTES:
            raise InputError(f"{path}: larger than {MAX_BYTES:,} bytes (a study file is a few settings)")
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from None
    try:
        too_many(text)
        return yaml.load(text, StudyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        if isinstance(exc, ValueProblem):
            raise InputError(f"{path}{line}: {exc.where or 'value'}: {exc.problem}") from None
        raise InputError(f"{path}{line}: malformed YAML ({getattr(exc, 'problem', exc)})") from None


def format_validation_error(exc: ValidationError, data: Any = None) -> str:
    """The most telling problem as `key.path: message`, the path written as the file's keys.

    pydantic reports one error per member of a union (a choice may be a number, a list, ...)
    and puts its own steps in the location (`list[...]`, `function-after[...]`): the error
    that reaches deepest into `data` (the validated input) is kept, a broken constraint
    before a wrong type (wrong types at one place are named together), and the path keeps
    only the steps that are keys or items of `data`.
    """
    located = [(file_steps(e, data), e) for e in exc.errors()]
    steps, err = max(located, key=lambda item: (len(item[0]), not wrong_kind(item[1])))
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, SettingError):  # its message names the key from the top
        return str(cause)
    msg = plain(err["msg"])
    if err["type"] == "extra_forbidden":
        msg = "unknown setting"
    elif wrong_kind(err):
        kinds = dict.fromkeys(plain(e["msg"]).removeprefix("Input should be ").split(",")[0]
                              for s, e in located if s == steps and wrong_kind(e))
        if len(kinds) > 1:
            msg = "Input should be " + " or ".join(kinds)
    loc = "".join(steps).removeprefix(".")
    return f"{loc}: {msg}" if loc else msg


def plain(msg: str) -> str:
    """pydantic's message in the file's terms: YAML has lists and mappings, not classes or tuples."""
    msg = re.sub(r" or instance of \w+", "", msg.removeprefix("Value error, "))
    return msg.replace("valid tuple", "valid list").replace("Tuple should", "List should")


def wrong_kind(err: Any) -> bool:
    return err["type"].endswith(("_type", "_parsing"))


def file_steps(err: Any, data: Any) -> list[str]:
    """The steps of an error's location that are keys (`.key`) or items (`[i]`) of `data`
    (without data: those that do not look like pydantic's own)."""
    node, steps = data, []
    for step in err["loc"]:
        if isinstance(node, dict) and step in node:
            steps.append(f".{step}")
            node = node[step]
        elif isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
            steps.append(f"[{step}]")
            node = node[step]
        elif data is None and not (isinstance(step, str) and ("[" in step or step.startswith("function-"))):
            steps.append(f".{step}")
    if err["type"] == "missing" and data is not None:
        steps.append(f".{err['loc'][-1]}")
    return steps
