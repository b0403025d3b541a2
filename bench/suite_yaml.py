"""A suite file's text: reading its YAML (`yaml.safe_load` that refuses a key repeated in one mapping)
and the checks of plain values every part of the loader uses (strings, names, mappings).

    raw = read_yaml(path)          # bench/config.py: load_suite
    sid = file_name(entry["id"], "strategies[0].id")

PyYAML keeps the last of two equal keys without a word, so a second `train:` block silently replaced
the first. `SuiteLoader` raises DuplicateKey naming the key and both lines instead. Merge keys
(`<<: *anchor`) are left out of the check: overriding a merged key is what they are for.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from bench.registry import YAML_BOOL_HINT

MERGE = "tag:yaml.org,2002:merge"


class DuplicateKey(yaml.YAMLError):
    """A key given twice in one mapping of a suite file; the message names it and both lines."""


class SuiteLoader(yaml.SafeLoader):
    """yaml.SafeLoader that raises DuplicateKey for a key repeated in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE or not isinstance(key_node, yaml.ScalarNode):
                continue
            key, line = self.construct_object(key_node), key_node.start_mark.line + 1
            if key in first:
                raise DuplicateKey(f"line {line}: key {key!r} is given a second time (first on line {first[key]}); "
                                   "YAML would keep only the last: merge the two into one")
            first[key] = line
        return super().construct_mapping(node, deep=deep)


SuiteLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, SuiteLoader.construct_mapping)


def read_yaml(path: Path) -> Any:
    """The parsed YAML of `path`; yaml.YAMLError (DuplicateKey among them), OSError, UnicodeDecodeError."""
    return yaml.load(path.read_text(), Loader=SuiteLoader)  # noqa: S506 (a SafeLoader)


def text(value: Any, where: str) -> str:
    """A string setting; a YAML 1.1 boolean (an unquoted `no`) or a number is refused."""
    if not isinstance(value, str):
        hint = YAML_BOOL_HINT if isinstance(value, bool) else ""
        raise ValueError(f"{where}: expected a string, got {value!r}{hint}")
    return value


SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
SAFE_NAME_TEXT = "ASCII letters, digits, '_', '-' and '.' (not first)"


def file_name(value: Any, where: str) -> str:
    """A suite name or an entry id: the results store makes folders of it (`results/<suite>/<dataset>__<id>...`),
    so it must be one safe file-name component: `SAFE_NAME`'s characters, not empty, not starting with '.'
    (a hidden folder, or `..` out of the store). ValueError naming `where` and the allowed characters."""
    value = text(value, where)
    if not value:
        raise ValueError(f"{where}: empty; it names folders in the results store: give a name of {SAFE_NAME_TEXT}")
    bad = sorted({c for c in value if not SAFE_NAME.fullmatch(c)})
    if bad or value.startswith("."):
        found = f"has {', '.join(map(repr, bad))}" if bad else "starts with '.'"
        raise ValueError(f"{where}: {value!r} {found}; it names folders in the results store, so it may hold only "
                         f"{SAFE_NAME_TEXT}")
    return value


def mapping(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def refuse_unknown(raw: dict, valid: tuple[str, ...] | list[str], where: str) -> None:
    for key in raw:
        if key not in valid:
            prefix = f"{where}." if where else ""
            raise ValueError(f"{prefix}{key}: unknown key; valid: {', '.join(valid)}")


def refuse_repeated(items: list, where: str) -> None:
    repeated = sorted({str(x) for x in items if items.count(x) > 1})
    if repeated:
        raise ValueError(f"{where}: {', '.join(map(repr, repeated))} given more than once; name each task once")
