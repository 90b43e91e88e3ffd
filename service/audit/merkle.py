"""RFC 6962 Merkle trees (SHA-256): roots of a batch's decisions and inclusion proofs.

Leaf hash = SHA-256(0x00 || data), node hash = SHA-256(0x01 || left || right), the empty tree
hashes to SHA-256(""), and a tree of n leaves splits at the largest power of two below n.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of the raw leaf data."""
    return _root_of_hashes([leaf_hash(leaf) for leaf in leaves])


class RootBuilder:
    """MTH of leaves added one at a time, in O(log n) memory: a stack of perfect subtrees whose
    sizes are the binary digits of n, folded right to left at the end (RFC 6962's split)."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []
        self.count = 0

    def add(self, leaf: bytes) -> None:
        size, digest = 1, leaf_hash(leaf)
        while self._stack and self._stack[-1][0] == size:
            left = self._stack.pop()[1]
            size, digest = size * 2, node_hash(left, digest)
        self._stack.append((size, digest))
        self.count += 1

    def root(self) -> bytes:
        if not self._stack:
            return hashlib.sha256(b"").digest()
        digest = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            digest = node_hash(left, digest)
        return digest


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(m, D[n]) (RFC 6962 2.1.1): the sibling hashes from the leaf up to the root."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} is not in a tree of {len(leaves)}")
    return _path(index, [leaf_hash(leaf) for leaf in leaves])


def verify_inclusion(leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], expected_root: bytes) -> bool:
    """RFC 9162 2.1.3.2: does `proof` place `leaf` at `index` of the tree with `expected_root`?"""
    if not 0 <= index < tree_size:
        return False
    fn, sn = index, tree_size - 1
    digest = leaf_hash(leaf)
    for sibling in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            digest = node_hash(sibling, digest)
            if not fn & 1:
                while fn and not fn & 1:
                    fn, sn = fn >> 1, sn >> 1
        else:
            digest = node_hash(digest, sibling)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and digest == expected_root


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _root_of_hashes(hashes: Sequence[bytes]) -> bytes:
    if not hashes:
        return hashlib.sha256(b"").digest()
    # Bottom-up: pair neighbours; an odd last node is carried up unchanged, which gives the same
    # tree as RFC 6962's recursive split at the largest power of two.
    level = list(hashes)
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def _path(index: int, hashes: Sequence[bytes]) -> list[bytes]:
    n = len(hashes)
    if n <= 1:
        return []
    k = _split(n)
    if index < k:
        return [*_path(index, hashes[:k]), _root_of_hashes(hashes[k:])]
    return [*_path(index - k, hashes[k:]), _root_of_hashes(hashes[:k])]
