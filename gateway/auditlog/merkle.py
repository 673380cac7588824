"""RFC 6962 / RFC 9162 §2.1 Merkle trees: hashes, inclusion and consistency proofs, and their verification.

Pure functions over bytes. Proofs are built from `node(level, index)`, the hash of the complete subtree
of 2**level leaves starting at leaf index * 2**level, so a store that keeps those nodes answers any proof
with O(log n) reads (at most O(log² n) for the right edge of a tree whose size is not a power of two).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

NodeReader = Callable[[int, int], bytes]


class ProofError(ValueError):
    """A proof does not verify, or its parameters are impossible."""


def leaf_hash(data: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaves: Sequence[bytes]) -> bytes:
    """The root over leaf hashes (not leaf data), computed directly (reference and small trees)."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    # Fold complete pairs level by level; an odd last node is carried up unchanged (RFC 6962's MTH).
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def range_hash(node: NodeReader, start: int, end: int) -> bytes:
    """MTH of leaves [start, end), from stored complete subtrees (start aligned as MTH's recursion makes it)."""
    size = end - start
    if size <= 0:
        raise ProofError("empty range")
    if size & (size - 1) == 0 and start % size == 0:
        return node(size.bit_length() - 1, start // size)
    k = _split(size)
    return node_hash(range_hash(node, start, start + k), range_hash(node, start + k, end))


def inclusion_proof(node: NodeReader, index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 6962 §2.1.1."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    proof: list[bytes] = []
    start, end, m = 0, size, index
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            proof.append(range_hash(node, start + k, end))
            end = start + k
        else:
            proof.append(range_hash(node, start, start + k))
            start, m = start + k, m - k
    proof.reverse()
    return proof


def consistency_proof(node: NodeReader, first: int, second: int) -> list[bytes]:
    """PROOF(first, D[0:second]) of RFC 6962 §2.1.2."""
    if not 0 < first <= second:
        raise ProofError(f"no consistency proof between sizes {first} and {second}")
    if first == second:
        return []
    proof: list[bytes] = []
    start, end, m, complete = 0, second, first, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            proof.append(range_hash(node, start + k, end))
            end = start + k
        else:
            proof.append(range_hash(node, start, start + k))
            start, m, complete = start + k, m - k, False
    if not complete:
        proof.append(range_hash(node, start, end))
    proof.reverse()
    return proof


def _check(hashes: Sequence[bytes]) -> None:
    if any(len(h) != HASH_SIZE for h in hashes):
        raise ProofError("every hash is 32 bytes")


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root implied by an inclusion proof (RFC 9162 §2.1.3.2)."""
    _check([leaf, *proof])
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("the proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("the proof is too short")
    return r


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Raise ProofError unless `leaf` is at `index` in the tree of `size` leaves with `root`."""
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise ProofError("the inclusion proof does not lead to the root")


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes,
                       proof: Sequence[bytes]) -> None:
    """Raise ProofError unless the tree of `second` leaves extends the tree of `first` (RFC 9162 §2.1.4.2)."""
    _check([first_root, second_root, *proof])
    if not 0 < first <= second:
        raise ProofError(f"no consistency between sizes {first} and {second}")
    if first == second:
        if proof:
            raise ProofError("equal sizes have an empty proof")
        if first_root != second_root:
            raise ProofError("equal sizes with different roots")
        return
    if not proof:
        raise ProofError("the proof is empty")
    path = list(proof)
    if first & (first - 1) == 0:  # a power of two: the first root is the proof's implicit first node
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the proof is too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("the proof is too short")
    if fr != first_root or sr != second_root:
        raise ProofError("the consistency proof does not lead to both roots")


class CompactTree:
    """The right edge of a growing tree: append leaf hashes, get the new complete nodes and the root.

    A sequencer keeps one, stores each node `append` returns at (level, index), and so never reads the
    tree back to grow it.
    """

    def __init__(self, size: int = 0, edge: Sequence[bytes] = ()) -> None:
        if len(edge) != bin(size).count("1"):
            raise ValueError("the edge must hold one hash per set bit of the size")
        self.size = size
        self.edge = list(edge)  # roots of the complete subtrees, largest first

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; return the nodes it completes as (level, index, hash), the leaf first."""
        index = self.size
        made = [(0, index, leaf)]
        h, level = leaf, 0
        while (index >> level) & 1:
            h = node_hash(self.edge.pop(), h)
            level += 1
            made.append((level, index >> level, h))
        self.edge.append(h)
        self.size += 1
        return made

    def root(self) -> bytes:
        if not self.edge:
            return EMPTY_ROOT
        r = self.edge[-1]
        for h in reversed(self.edge[:-1]):
            r = node_hash(h, r)
        return r
