"""Loading the policy YAML file, with one clear line per problem.

An operator edits the policy by hand, so every problem names the file, the line and the
setting, and says what was expected::

    policy.yaml:12: rules.cert.expiring_soon.days: Input should be a valid integer (got 'soon')
    policy.yaml:3: rules.cert.expird: unknown key; allowed here: cert.changed, cert.expired, ...

Pydantic validates; the YAML node tree (``yaml.compose``) maps each error's location back to
the line of the offending key (or list item). An empty file is the default policy.
``trust.ca_files`` paths are resolved relative to the policy file's folder and must exist.
"""

from __future__ import annotations

import os
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from processors.policy import Policy

Loc = tuple[int | str, ...]


class PolicyError(Exception):
    """The policy file cannot be used; ``problems`` has one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and validate the policy at ``path``.

    Raises :class:`PolicyError` listing every problem (unreadable file, invalid YAML, a
    duplicate key, a bad or unknown setting, a missing CA file), each as
    ``<file>:<line>: <setting>: <what is wrong>``.
    """
    name = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([f"{name}: cannot read the policy: {exc.strerror or exc}"]) from exc
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise PolicyError([f"{name}:{line}: not UTF-8 text ({exc.reason})"]) from exc
    root, data = _parse(name, text)
    if root is None or data is None:  # no document, or an explicit empty one ("---", "~")
        return Policy()
    if not isinstance(root, yaml.MappingNode):
        raise PolicyError([f"{name}:{_line(root)}: the policy must be a mapping of settings "
                           f"(key: value), not {_kind(data)}"])
    problems = _duplicates(name, root, ())
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        problems += [_problem(name, root, error) for error in exc.errors()]
        # File order; the validator's order within a line (sorted() is stable).
        raise PolicyError([text for _, text in sorted(problems, key=lambda p: p[0])]) from exc
    if problems:
        raise PolicyError([text for _, text in problems])
    return _resolve_ca_files(name, root, policy, Path(path).parent)


def _parse(name: str, text: str) -> tuple[yaml.Node | None, Any]:
    """The document's node tree and its Python value (None, None when empty)."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        what = ", ".join(part for part in (exc.context, exc.problem) if part)
        raise PolicyError([f"{where}: invalid YAML: {what}"]) from exc
    except yaml.YAMLError as exc:
        raise PolicyError([f"{name}: invalid YAML: {exc}"]) from exc
    finally:
        loader.dispose()
    return root, data


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    return f"a single value ({value!r})"


def _format_loc(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(top level)"


# --------------------------------------------------------------------------------------
# Mapping a pydantic location back to the YAML tree, and to the model it describes.


def _child(node: yaml.Node, part: int | str, names: Sequence[str]) -> yaml.Node | None:
    """The node holding ``part`` (a list index, or a key spelled as one of ``names``);
    for a mapping key, the key node itself (its line is the setting's line)."""
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int):
        return node.value[part] if 0 <= part < len(node.value) else None
    if isinstance(node, yaml.MappingNode):
        for key, _value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value in names:
                return key
    return None


def _value_of(mapping: yaml.Node, key: yaml.Node) -> yaml.Node:
    for k, v in mapping.value:
        if k is key:
            return v  # type: ignore[no-any-return]
    return key


def _field_names(model: type[BaseModel] | None, part: int | str) -> list[str]:
    """Every spelling of ``part`` the model accepts (alias and attribute name)."""
    names = [str(part)]
    if model is not None:
        for attr, info in model.model_fields.items():
            if part in (attr, info.alias):
                names += [attr] + ([info.alias] if info.alias else [])
    return names


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds, looking through Optional, list and dict."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType, list, dict):
        for arg in get_args(annotation):
            found = _inner_model(arg)
            if found is not None:
                return found
    return None


def _step_model(model: type[BaseModel] | None, part: int | str) -> type[BaseModel] | None:
    if model is None or isinstance(part, int):
        return model  # a list index keeps the item model found at the field
    for attr, info in model.model_fields.items():
        if part in (attr, info.alias):
            return _inner_model(info.annotation)
    return None


def _locate(root: yaml.Node, loc: Loc) -> tuple[int, type[BaseModel] | None]:
    """The line of the deepest node ``loc`` reaches, and the model at ``loc[:-1]``."""
    node, line = root, _line(root)
    model: type[BaseModel] | None = Policy
    parent_model: type[BaseModel] | None = Policy
    for part in loc:
        parent_model = model
        found = _child(node, part, _field_names(model, part))
        if found is None:
            break
        line = _line(found)
        node = _value_of(node, found) if isinstance(node, yaml.MappingNode) else found
        model = _step_model(model, part)
    return line, parent_model


def _allowed_keys(model: type[BaseModel] | None) -> str:
    if model is None:
        return ""
    keys = sorted(info.alias or attr for attr, info in model.model_fields.items())
    return "; allowed here: " + ", ".join(keys)


def _problem(name: str, root: yaml.Node, error: ErrorDetails) -> tuple[int, str]:
    """(line, problem text) of one pydantic error."""
    loc: Loc = tuple(error["loc"])
    line, parent = _locate(root, loc)
    if error["type"] == "extra_forbidden":
        return line, (f"{name}:{line}: {_format_loc(loc)}: unknown key (extra inputs are not "
                      f"permitted){_allowed_keys(parent)}")
    message = error["msg"].removeprefix("Value error, ")
    if message.startswith("Input should be") and ", unable to" in message:
        message = message.split(", unable to")[0]  # the "(got ...)" below says it better
    value = error.get("input")
    if (error["type"] != "missing" and isinstance(value, str | int | float | bool)
            and repr(value) not in message):
        message += f" (got {value!r})"
    return line, f"{name}:{line}: {_format_loc(loc)}: {message}"


def _duplicates(name: str, node: yaml.Node, loc: Loc) -> list[tuple[int, str]]:
    """YAML silently keeps the last of two equal keys; an operator's typo should not."""
    problems: list[tuple[int, str]] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            text = key.value if isinstance(key, yaml.ScalarNode) else str(key)
            here: Loc = (*loc, str(text))
            if text in seen:
                problems.append((_line(key), f"{name}:{_line(key)}: {_format_loc(here)}: "
                                 f"duplicate key (first at line {seen[text]})"))
            seen.setdefault(text, _line(key))
            problems += _duplicates(name, value, here)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems += _duplicates(name, item, (*loc, index))
    return problems


def _resolve_ca_files(name: str, root: yaml.Node, policy: Policy, base: Path) -> Policy:
    """Relative ``trust.ca_files`` are read from the policy's folder; each must exist."""
    resolved: list[Path] = []
    problems: list[str] = []
    for index, ca_file in enumerate(policy.trust.ca_files):
        full = ca_file.expanduser()
        full = full if full.is_absolute() else base / full
        if not full.is_file():
            line, _ = _locate(root, ("trust", "ca_files", index))
            what = "is not a file" if full.exists() else "does not exist"
            problems.append(f"{name}:{line}: trust.ca_files[{index}]: {full} {what} "
                            "(relative paths are read from the policy file's folder)")
        resolved.append(full)
    if problems:
        raise PolicyError(problems)
    if not resolved:
        return policy
    trust = policy.trust.model_copy(update={"ca_files": resolved})
    return policy.model_copy(update={"trust": trust})
