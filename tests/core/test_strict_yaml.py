"""YAML with duplicate keys refused at any depth; everything else as ``yaml.safe_load`` reads it."""

from __future__ import annotations

import pytest
import yaml

from gestural.core.strict_yaml import DuplicateKeyError, safe_load_unique


@pytest.mark.parametrize("text", [
    "",
    "a: 1\nb: [1, 2, {c: 3}]\n",
    "base: &base {x: 1, y: 2}\nother:\n  <<: *base\n  y: 3\n",  # a merge may override its keys
    "1: int\n'1': str\n",  # an int and a string are different keys
    "a: {b: 1}\nc: {b: 2}\n",  # the same key in two mappings
])
def test_what_safe_load_reads_is_read_the_same(text):
    assert safe_load_unique(text) == yaml.safe_load(text)


@pytest.mark.parametrize("text, key, lines", [
    ("a: 1\nb: 2\na: 3\n", "a", (1, 3)),
    ("train:\n  lr: 1\n  hidden: 2\n  lr: 3\n", "train.lr", (2, 4)),
    ("s:\n  art:\n    noise: 1\n    noise: 1\n", "s.art.noise", (3, 4)),  # even with the same value
    ("x:\n  - {k: 1, k: 2}\n", "x.[0].k", (2, 2)),
    ("{a: 1, a: 2}\n", "a", (1, 1)),
])
def test_a_duplicate_key_is_refused_with_its_path_and_lines(text, key, lines):
    with pytest.raises(DuplicateKeyError) as caught:
        safe_load_unique(text)
    assert (caught.value.key, caught.value.first_line, caught.value.line) == (key, *lines)


def test_broken_yaml_is_still_a_yaml_error():
    with pytest.raises(yaml.YAMLError, match="line 1"):
        safe_load_unique("a: [1, 2\n")
    with pytest.raises(yaml.YAMLError):
        safe_load_unique("a: 1\n---\nb: 2\n")  # one document only, as safe_load
