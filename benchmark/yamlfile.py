"""YAML as the project reads it: safe, and a key given twice is an error rather than the last one winning.

PyYAML keeps the last of two equal keys without a word, so ``{name: baseline, name: ddm}`` silently
ran DDM. :func:`load` raises :class:`yaml.constructor.ConstructorError` (a ``MarkedYAMLError``, with
the line of the second key) instead.
"""

from __future__ import annotations

from typing import Any

import yaml


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate mapping keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base class reports it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (a key may appear once)", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load(text: str) -> Any:
    """Parse YAML ``text`` safely, refusing duplicate keys."""
    loader = UniqueKeyLoader(text)  # what yaml.load does, with this SafeLoader subclass
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
