"""RFC 6962 Merkle trees against the transparency-dev/merkle reference vectors, and proofs by property."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.auditlog import merkle
from gateway.auditlog.merkle import ProofError

# transparency-dev/merkle testonly/constants.go: leaf inputs, and the roots of the trees of 0..8 of them.
LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                     "606162636465666768696a6b6c6d6e6f")]
ROOTS = [bytes.fromhex(h) for h in (
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]
# Node hashes of the complete subtrees, by level then index.
NODES = [[bytes.fromhex(h) for h in level] for level in (
    ("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
     "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
     "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
     "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
     "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
     "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
     "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
     "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1"),
    ("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
     "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
     "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
     "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
    ("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
     "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",),
)]
H = bytes.fromhex
# proof/verify_test.go: (leaf index counted from 1, tree size, proof)
INCLUSION = [
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (3, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (2, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
CONSISTENCY = [
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]


class Store:
    """Complete-subtree nodes in a dict, as the sequencer stores them, with a count of reads."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.nodes: dict[tuple[int, int], bytes] = {}
        self.reads = 0
        tree = merkle.CompactTree()
        for leaf in leaves:
            for level, index, h in tree.append(leaf):
                self.nodes[level, index] = h
        self.root = tree.root()

    def __call__(self, level: int, index: int) -> bytes:
        self.reads += 1
        return self.nodes[level, index]


def test_rfc6962_leaf_and_node_hashes() -> None:
    # transparency-dev/merkle rfc6962/rfc6962_test.go
    assert merkle.leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert merkle.leaf_hash(b"L123456").hex() == "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    assert merkle.node_hash(b"N123", b"N456").hex() == "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
    assert merkle.EMPTY_ROOT == hashlib.sha256(b"").digest() == ROOTS[0]


def test_roots_and_stored_nodes_match_the_reference_tree() -> None:
    hashes = [merkle.leaf_hash(d) for d in LEAVES]
    for size in range(len(LEAVES) + 1):
        assert merkle.root_of(hashes[:size]) == ROOTS[size]
        assert Store(hashes[:size]).root == ROOTS[size]
    store = Store(hashes)
    for level, row in enumerate(NODES):
        for index, h in enumerate(row):
            assert store.nodes[level, index] == h


@pytest.mark.parametrize(("leaf", "size", "proof"), INCLUSION)
def test_inclusion_proof_vectors(leaf: int, size: int, proof: list[str]) -> None:
    hashes = [merkle.leaf_hash(d) for d in LEAVES]
    store = Store(hashes[:size])
    assert merkle.inclusion_proof(store, leaf - 1, size) == [H(p) for p in proof]
    merkle.verify_inclusion(leaf - 1, size, hashes[leaf - 1], [H(p) for p in proof], ROOTS[size])


@pytest.mark.parametrize(("first", "second", "proof"), CONSISTENCY)
def test_consistency_proof_vectors(first: int, second: int, proof: list[str]) -> None:
    store = Store([merkle.leaf_hash(d) for d in LEAVES[:second]])
    assert merkle.consistency_proof(store, first, second) == [H(p) for p in proof]
    merkle.verify_consistency(first, second, ROOTS[first], ROOTS[second], [H(p) for p in proof])


def test_impossible_parameters_are_refused() -> None:
    store = Store([merkle.leaf_hash(d) for d in LEAVES])
    for index, size in [(0, 0), (1, 1), (8, 8), (-1, 8)]:
        with pytest.raises(ProofError):
            merkle.inclusion_proof(store, index, size)
    for first, second in [(0, 8), (9, 8), (3, 2)]:
        with pytest.raises(ProofError):
            merkle.consistency_proof(store, first, second)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(0, 1, b"short", [], ROOTS[1])


def _flip(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n), st.integers(0, n - 1),
                                                       st.integers(0, 255))))
def test_every_proof_verifies_and_any_flipped_bit_fails(case: tuple[int, int, int, int]) -> None:
    second, first, index, bit = case
    hashes = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(second)]
    store = Store(hashes)
    small = Store(hashes[:first])
    assert store.root == merkle.root_of(hashes)
    # Inclusion of `index` in the larger tree, read in O(log^2 n) node reads at most.
    store.reads = 0
    proof = merkle.inclusion_proof(store, index, second)
    assert store.reads <= max(1, second.bit_length()) ** 2
    merkle.verify_inclusion(index, second, hashes[index], proof, store.root)
    bad_proofs = [[*proof[:i], _flip(p, bit), *proof[i + 1:]] for i, p in enumerate(proof)]
    for bad in bad_proofs:
        with pytest.raises(ProofError):
            merkle.verify_inclusion(index, second, hashes[index], bad, store.root)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(index, second, hashes[index], proof, _flip(store.root, bit))
    with pytest.raises(ProofError):
        merkle.verify_inclusion(index, second, _flip(hashes[index], bit), proof, store.root)
    # As in the reference vectors: another index, or the size doubled or halved (the signed checkpoint binds
    # the size to the root, so a size that happens to give the same root is never claimed).
    for other_index, other_size in [(index ^ 1, second), (index, second * 2), (index, second // 2)]:
        if 0 <= other_index < other_size and (other_index, other_size) != (index, second):
            with pytest.raises(ProofError):
                merkle.verify_inclusion(other_index, other_size, hashes[index], proof, store.root)
    # Consistency of the first `first` leaves with all of them.
    proof = merkle.consistency_proof(store, first, second)
    merkle.verify_consistency(first, second, small.root, store.root, proof)
    for i, p in enumerate(proof):
        with pytest.raises(ProofError):
            merkle.verify_consistency(first, second, small.root, store.root, [*proof[:i], _flip(p, bit), *proof[i + 1:]])
    if first < second:
        with pytest.raises(ProofError):
            merkle.verify_consistency(first, second, _flip(small.root, bit), store.root, proof)
        with pytest.raises(ProofError):
            merkle.verify_consistency(first, second, small.root, _flip(store.root, bit), proof)
        if first > 1:
            with pytest.raises(ProofError):
                merkle.verify_consistency(first - 1, second, small.root, store.root, proof)
