# pragma version ~=0.4.3
"""
@title EAP settlement ledger
@notice Records each settlement instruction once, keyed by its id, and emits Settled.
@dev Only accounts the owner authorised may settle (a stranger could otherwise record an
     instruction id with other terms first).  Settling an id again with the same terms is a
     no-op; with other terms it reverts.
"""

event Settled:
    instruction_id: indexed(bytes32)
    payer: indexed(bytes32)
    payee: indexed(bytes32)
    currency: bytes32
    amount: uint256
    settler: address

event Authorised:
    settler: indexed(address)
    allowed: bool

struct Record:
    terms: bytes32
    settler: address
    block: uint256

owner: public(address)
settlers: public(HashMap[address, bool])
records: public(HashMap[bytes32, Record])


@deploy
def __init__():
    self.owner = msg.sender
    self.settlers[msg.sender] = True
    log Authorised(settler=msg.sender, allowed=True)


@external
def authorise(settler: address, allowed: bool):
    assert msg.sender == self.owner, "only the owner authorises settlers"
    self.settlers[settler] = allowed
    log Authorised(settler=settler, allowed=allowed)


@pure
@external
def terms_of(payer: bytes32, payee: bytes32, currency: bytes32, amount: uint256) -> bytes32:
    return keccak256(abi_encode(payer, payee, currency, amount))


@external
def settle(
    instruction_id: bytes32, payer: bytes32, payee: bytes32, currency: bytes32, amount: uint256
) -> bool:
    """
    @notice Record instruction `instruction_id` paying `amount` of `currency` minor units.
    @return True when recorded now, False when it was recorded before with the same terms.
    """
    assert self.settlers[msg.sender], "settler not authorised"
    assert amount > 0, "amount must be positive"
    assert payer != payee, "payer and payee are the same"
    terms: bytes32 = keccak256(abi_encode(payer, payee, currency, amount))
    known: Record = self.records[instruction_id]
    if known.settler != empty(address):
        assert known.terms == terms, "instruction settled with other terms"
        return False
    self.records[instruction_id] = Record(terms=terms, settler=msg.sender, block=block.number)
    log Settled(
        instruction_id=instruction_id,
        payer=payer,
        payee=payee,
        currency=currency,
        amount=amount,
        settler=msg.sender,
    )
    return True
