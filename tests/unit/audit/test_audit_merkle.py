"""RFC 6962 Merkle trees against the published Certificate Transparency test vectors."""

from __future__ import annotations

import hashlib
import random

import pytest

from service.audit.merkle import RootBuilder, inclusion_proof, leaf_hash, node_hash, root, verify_inclusion

# Leaves, roots and inclusion proofs of the reference test tree of Certificate Transparency:
# transparency-dev/merkle testonly/constants.go and proof/verify_test.go (also in
# google/trillian merkle/logverifier). Their leaf numbers are 1-based; ours are indexes.
LEAVES = [
    bytes.fromhex(h)
    for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")
]
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
INCLUSION = [
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]


def test_the_empty_tree() -> None:
    assert root([]).hex() == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize("size", range(1, 9))
def test_published_roots(size: int) -> None:
    assert root(LEAVES[:size]).hex() == ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_published_inclusion_proofs(index: int, size: int, proof: list[str]) -> None:
    assert [p.hex() for p in inclusion_proof(LEAVES[:size], index)] == proof
    assert verify_inclusion(
        LEAVES[index], index, size, [bytes.fromhex(p) for p in proof], bytes.fromhex(ROOTS[size - 1])
    )


def _reference_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 2.1 word for word (recursive), to check the iterative root."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaf_hash(leaves[0])
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(_reference_root(leaves[:k]), _reference_root(leaves[k:]))


def test_every_proof_of_every_small_tree_verifies_and_tampering_fails() -> None:
    for size in range(1, 65):
        leaves = [f"decision-{i}".encode() for i in range(size)]
        tree_root = root(leaves)
        assert tree_root == _reference_root(leaves)
        for index in range(size):
            proof = inclusion_proof(leaves, index)
            assert verify_inclusion(leaves[index], index, size, proof, tree_root)
            assert not verify_inclusion(b"forged", index, size, proof, tree_root)
            if size > 1:
                assert not verify_inclusion(leaves[index], (index + 1) % size, size, proof, tree_root)
                # (A wrong tree size can verify when both trees share the path's shape, e.g. 3
                # and 4 leaves for leaf 0: the size is bound by the signed root, not the proof.)
                assert not verify_inclusion(leaves[index], index, 2 * size + 2, proof, tree_root)
                assert not verify_inclusion(leaves[index], index, size, proof[:-1], tree_root)
                flipped = bytes([proof[0][0] ^ 1]) + proof[0][1:]
                assert not verify_inclusion(leaves[index], index, size, [flipped, *proof[1:]], tree_root)


def test_random_large_trees_match_the_reference() -> None:
    rng = random.Random(6962)
    for _ in range(20):
        leaves = [rng.randbytes(rng.randint(0, 40)) for _ in range(rng.randint(65, 700))]
        assert root(leaves) == _reference_root(leaves)
        index = rng.randrange(len(leaves))
        assert verify_inclusion(leaves[index], index, len(leaves), inclusion_proof(leaves, index), root(leaves))


def test_the_streaming_root_equals_the_recursive_one() -> None:
    rng = random.Random(9162)
    for size in [*range(0, 70), 1023, 1024, 1025]:
        leaves = [rng.randbytes(rng.randint(0, 12)) for _ in range(size)]
        builder = RootBuilder()
        for leaf in leaves:
            builder.add(leaf)
        assert (builder.count, builder.root()) == (size, _reference_root(leaves))
