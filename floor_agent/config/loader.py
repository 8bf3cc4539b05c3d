"""The config loader: one YAML file per role, validated by strict pydantic models.

Admins edit these files by hand on production floors, so every mistake must come back
as ``file:line: field.path: what was expected (got ...)`` instead of a traceback or,
worse, a silently ignored typo that leaves a security control at its default.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from floor_agent.config.base import ROLES

Model = TypeVar("Model", bound=BaseModel)


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file, kept structured so the CLI and tests can inspect it."""

    file: str
    line: int | None
    column: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        if self.field:
            return f"{where}: {self.field}: {self.message}"
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """A config file that cannot be used; str() is the admin-facing text, one issue per line."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))

    @property
    def path(self) -> str:
        """The offending file, for callers that log it separately from the message."""
        return self.issues[0].file if self.issues else ""


def _error(
    file: str, message: str, *, line: int | None = None, column: int | None = None, field: str = ""
) -> ConfigError:
    return ConfigError([ConfigIssue(file, line, column, field, message)])


def _did_you_mean(word: str, candidates: list[str]) -> str | None:
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return match[0] if match else None


# --------------------------------------------------------------------------- YAML


def _read_text(path: Path, file: str) -> str:
    """Read as UTF-8 ourselves so each OS-level failure gets a specific message."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _error(file, "config file not found") from None
    except IsADirectoryError:
        raise _error(file, "is a directory, expected a YAML config file") from None
    except PermissionError:
        raise _error(file, "cannot read config file: permission denied") from None
    except OSError as exc:
        raise _error(file, f"cannot read config file: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        bad = raw[exc.start]
        message = f"not valid UTF-8 (byte 0x{bad:02x} at offset {exc.start}); save it as UTF-8"
        raise _error(file, message, line=line) from None


def _yaml_error(file: str, text: str, exc: yaml.YAMLError) -> ConfigError:
    if isinstance(exc, yaml.reader.ReaderError):
        before = text[: exc.position]
        line = before.count("\n") + 1
        column = exc.position - (before.rfind("\n") + 1) + 1
        return _error(
            file,
            f"invalid YAML: character #x{exc.character:04x} is not allowed",
            line=line,
            column=column,
        )
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        message = f"invalid YAML: {problem}"
        if exc.context and exc.problem:
            message += f" ({exc.context}"
            if exc.context_mark is not None:
                message += f" started on line {exc.context_mark.line + 1}"
            message += ")"
        if "\\t" in problem or "\t" in problem:
            message += "; indent with spaces, YAML does not allow tabs"
        if mark is None:
            return _error(file, message)
        return _error(file, message, line=mark.line + 1, column=mark.column + 1)
    return _error(file, f"invalid YAML: {exc}")


def _find_duplicates(root: Node, file: str) -> list[ConfigIssue]:
    """PyYAML keeps the last of two equal keys without a word; we refuse the file instead."""
    issues: list[ConfigIssue] = []
    seen_nodes: set[int] = set()

    def walk(node: Node, path: list[str]) -> None:
        if id(node) in seen_nodes:  # aliases (and recursive anchors) share node objects
            return
        seen_nodes.add(id(node))
        if isinstance(node, MappingNode):
            first_line: dict[str, int] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, ScalarNode) or key_node.tag.endswith(":merge"):
                    continue
                key = key_node.value
                line = key_node.start_mark.line + 1
                if key in first_line:
                    issues.append(
                        ConfigIssue(
                            file,
                            line,
                            None,
                            ".".join([*path, key]),
                            f"duplicate key (first set on line {first_line[key]}); "
                            "remove one, YAML would silently keep only the last",
                        )
                    )
                else:
                    first_line[key] = line
                walk(value_node, [*path, key])
        elif isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, [*path, str(index)])

    walk(root, [])
    return issues


def _compose(text: str, file: str) -> tuple[Node | None, Any]:
    """Compose (for line numbers) then construct (for values) from one parse."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:
        raise _yaml_error(file, text, exc) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        duplicates = _find_duplicates(node, file)
        if duplicates:
            raise ConfigError(duplicates)
        return node, loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise _yaml_error(file, text, exc) from None
    finally:
        loader.dispose()


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _walk(root: Node, loc: tuple[Any, ...]) -> tuple[Node, Node | None, bool]:
    """Follow a pydantic loc through the YAML nodes: (deepest node, its key node, exact)."""
    node, key_node = root, None
    for part in loc:
        child: tuple[Node, Node | None] | None = None
        if isinstance(node, MappingNode):
            for k, v in node.value:
                if isinstance(k, ScalarNode) and k.value == str(part):
                    child = (v, k)
        elif isinstance(node, SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = (node.value[part], None)
        if child is None:
            return node, key_node, False
        node, key_node = child
    return node, key_node, True


def _describe(node: Node, value: Any, *, wants_text: bool = False) -> str:
    """Show the value as the admin wrote it, not as YAML or pydantic re-typed it."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, ScalarNode):
        text = node.value
        if node.style is None and text in ("", "~", "null", "Null", "NULL"):
            return "an empty value"
        if len(text) > 60:
            text = text[:57] + "..."
        shown = text if node.style is None and not isinstance(value, str) else repr(text)
        if isinstance(value, bool) and text.lower() not in ("true", "false"):
            shown += f", which YAML reads as {str(value).lower()}"
            if wants_text:
                shown += "; quote it to mean text"
        return shown
    return repr(value)


def _section_model(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the mapping at loc, used for key suggestions; through
    lists and mappings of models too (a list of routes: routes.0.<key>)."""
    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif get_origin(current) is list and get_args(current):
            current = get_args(current)[0]
        elif get_origin(current) is dict and len(get_args(current)) == 2:
            current = get_args(current)[1]
        else:
            return None
        while get_origin(current) is Annotated:
            current = get_args(current)[0]
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def _unknown_key_message(key: str, model: type[BaseModel] | None, present: set[str]) -> str:
    message = f"unknown key {key!r}"
    if model is None:
        return message
    unused = [name for name in model.model_fields if name not in present]
    suggestion = _did_you_mean(key, unused)
    if suggestion:
        return f"{message}; did you mean {suggestion!r}?"
    suggestion = _did_you_mean(key, list(model.model_fields))
    if suggestion:
        return f"{message}; did you mean {suggestion!r}? (it is also set in this section)"
    for name, field in model.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel) and key in sub.model_fields:
            return f"{message}; it belongs under '{name}:'"
    return f"{message}; expected one of: {', '.join(model.model_fields)}"


_MESSAGE_REWRITES = {
    "model_type": "expected a mapping of settings (indented 'key: value' lines)",
    "dict_type": "expected a mapping of settings (indented 'key: value' lines)",
    "missing": "missing required key",
    "float_type": "Input should be a number",
    "int_type": "Input should be a whole number",
    "path_type": "Input should be a file system path",
}


def _issue_from_pydantic(err: Any, root: Node, model: type[BaseModel], file: str) -> ConfigIssue:
    loc: tuple[Any, ...] = tuple(err["loc"])
    kind: str = err["type"]
    field = ".".join(str(part) for part in loc)
    node, key_node, exact = _walk(root, loc)
    if kind == "extra_forbidden" and exact:
        parent, _, _ = _walk(root, loc[:-1])
        present = set()
        if isinstance(parent, MappingNode):
            present = {k.value for k, _ in parent.value if isinstance(k, ScalarNode)}
        message = _unknown_key_message(str(loc[-1]), _section_model(model, loc[:-1]), present)
        line = _line(key_node) if key_node is not None else _line(node)
        return ConfigIssue(file, line, None, field, message)
    message = _MESSAGE_REWRITES.get(kind, err["msg"])
    message = message.removeprefix("Value error, ")
    value = err.get("input")
    if exact and kind != "missing":
        wants_text = kind in ("string_type", "literal_error")
        message += f" (got {_describe(node, value, wants_text=wants_text)})"
    if kind == "literal_error" and isinstance(value, str):
        allowed = re.findall(r"'([^']*)'", err.get("ctx", {}).get("expected", ""))
        suggestion = _did_you_mean(value, allowed)
        if suggestion:
            message += f"; did you mean {suggestion!r}?"
    return ConfigIssue(file, _line(node), None, field, message)


# --------------------------------------------------------------------------- public API


def load_role_file(path: str | Path, models: Mapping[str, type[BaseModel]],
                   expected_role: str | None = None) -> BaseModel:
    """Load and validate one role's YAML file with the model `models` holds for its role (every
    role's, or only `expected_role`'s); raise ConfigError listing every problem."""
    file = str(path)
    text = _read_text(Path(path), file)
    root, data = _compose(text, file)
    roles = ", ".join(ROLES)
    if root is None or data is None:
        raise _error(file, f"file is empty; expected at least 'role: <{' | '.join(ROLES)}>'")
    if not isinstance(root, MappingNode) or not isinstance(data, dict):
        raise _error(
            file,
            f"top level must be a mapping of settings starting with 'role:', "
            f"got {_describe(root, data)}",
            line=_line(root),
        )
    role_value, role_key, role_found = _walk(root, ("role",))
    if not role_found:
        raise _error(
            file, f"missing required key; expected one of: {roles}", line=_line(root), field="role"
        )
    role = data.get("role")
    if not isinstance(role, str) or role not in ROLES:
        message = f"unknown role {_describe(role_value, role)}; expected one of: {roles}"
        suggestion = _did_you_mean(role, list(ROLES)) if isinstance(role, str) else None
        if suggestion:
            message += f"; did you mean {suggestion!r}?"
        raise _error(file, message, line=_line(role_value), field="role")
    if expected_role is not None and role != expected_role:
        raise _error(
            file,
            f"this file configures the {role!r} role, but the {expected_role!r} role "
            "was asked to load it; pass the matching file",
            line=_line(role_value),
            field="role",
        )
    model = models[role]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        issues = [_issue_from_pydantic(err, root, model, file) for err in exc.errors()]
        issues.sort(key=lambda issue: issue.line or 0)
        raise ConfigError(issues) from None



def load_role(path: str | Path, model: type[Model]) -> Model:
    """One role's file read with that role's model: a role's own tools (the collector's, the
    door's, the cctv's) need not know every other role's model."""
    role = model.model_fields["role"].default
    return cast(Model, load_role_file(path, {role: model}, role))
