# pragma version ~=0.4.3
"""
@title EAP anchor registry
@notice Merkle roots of issuance batches, one per (issuer, seq), written once.
@dev An issuer is bound to the first account that anchors for it (trust on first use);
     the node publishes that address in its operator documentation.  Anchoring the same
     root again is a no-op; a different root for an anchored (issuer, seq) reverts.
"""

event Anchored:
    issuer: indexed(bytes32)
    seq: indexed(uint256)
    root: bytes32
    sender: address

# roots[issuer][seq]: the anchored Merkle root (zero: none yet)
roots: public(HashMap[bytes32, HashMap[uint256, bytes32]])
# the account allowed to anchor for an issuer
anchorer: public(HashMap[bytes32, address])


@external
def anchor(issuer: bytes32, seq: uint256, root: bytes32) -> bool:
    """
    @notice Anchor `root` as batch `seq` of `issuer`.
    @return True when written now, False when the same root was anchored before.
    """
    assert root != empty(bytes32), "empty root"
    known: bytes32 = self.roots[issuer][seq]
    if known == root:
        return False
    assert known == empty(bytes32), "another root is anchored for this batch"
    owner: address = self.anchorer[issuer]
    if owner == empty(address):
        self.anchorer[issuer] = msg.sender
    else:
        assert owner == msg.sender, "issuer is anchored by another account"
    self.roots[issuer][seq] = root
    log Anchored(issuer=issuer, seq=seq, root=root, sender=msg.sender)
    return True
