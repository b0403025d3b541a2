"""Reading a suite file's YAML: `yaml.safe_load` that refuses a key repeated in one mapping.

    raw = read_yaml(path)          # bench/config.py: load_suite

PyYAML keeps the last of two equal keys without a word, so a second `train:` block silently replaced
the first. `SuiteLoader` raises DuplicateKey naming the key and both lines instead. Merge keys
(`<<: *anchor`) are left out of the check: overriding a merged key is what they are for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

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
