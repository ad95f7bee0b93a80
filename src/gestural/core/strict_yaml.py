"""YAML as the spec has it: a key given twice in one mapping is an error.

PyYAML's ``safe_load`` keeps the last of two equal keys silently, so ``num_gestures``
written twice in params.yaml would train with whichever comes second.
"""

from __future__ import annotations

import yaml

_MERGE = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.YAMLError):
    """A mapping holds ``key`` (dotted path from the document's root) twice.

    Attributes
    ----------
    key : str
        e.g. ``train.lr``; list items appear as ``[index]``.
    first_line, line : int
        1-based lines of the first and of the repeated key.
    """

    def __init__(self, key: str, first_line: int, line: int):
        super().__init__(f"{key}: duplicate key (lines {first_line} and {line})")
        self.key, self.first_line, self.line = key, first_line, line


def safe_load_unique(text: str):
    """``yaml.safe_load(text)``, refusing duplicate keys at any depth.

    The check walks the composed node tree, where every mapping still holds all its keys
    and their lines, before the tree becomes Python objects.

    Raises
    ------
    DuplicateKeyError
        The first key given twice.
    yaml.YAMLError
        Anything else ``safe_load`` refuses.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:  # an empty document
            return None
        _refuse_duplicate_keys(node, ())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _refuse_duplicate_keys(node: yaml.Node, where: tuple[str, ...]) -> None:
    """Walk the mappings and lists below ``node``; ``where`` is the key path to it."""
    if isinstance(node, yaml.MappingNode):
        first_line: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE:
                continue  # complex keys and `<<:` merges are the constructor's to judge
            key, line = (key_node.tag, key_node.value), key_node.start_mark.line + 1
            path = (*where, key_node.value)
            if key in first_line:
                raise DuplicateKeyError(".".join(path), first_line[key], line)
            first_line[key] = line
            _refuse_duplicate_keys(value_node, path)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _refuse_duplicate_keys(item, (*where, f"[{index}]"))
