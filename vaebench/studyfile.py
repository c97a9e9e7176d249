"""Study files as YAML: a strict loader, and pydantic's errors told in the file's own keys."""
from __future__ import annotations

import re
from typing import Any

import yaml
from pydantic import ValidationError

from vaebench.validate import SettingError, shown


class StudyLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader that refuses duplicate keys (the later one would silently win),
    nesting deeper than MAX_DEPTH (PyYAML composes recursively: RecursionError) and aliases
    that expand past MAX_VALUES values (or refer to themselves)."""

    MAX_DEPTH = 20
    MAX_VALUES = 100_000

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        alias = self.check_event(yaml.AliasEvent)
        mark = self.peek_event().start_mark
        self.depth = getattr(self, "depth", 0) + 1
        try:
            if self.depth > self.MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {self.MAX_DEPTH} levels deep", mark)
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        if alias and not hasattr(node, "n_values"):
            raise yaml.composer.ComposerError(None, None, "an alias that refers to itself", mark)
        if not alias:
            children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else (
                node.value if isinstance(node, yaml.SequenceNode) else [])
            node.n_values = 1 + sum(child.n_values for child in children)
            if node.n_values > self.MAX_VALUES:
                raise yaml.composer.ComposerError(None, None, f"more than {self.MAX_VALUES} values", mark)
        return node

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
