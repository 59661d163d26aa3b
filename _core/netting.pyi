"""Type stub of the compiled ``eap._core.netting`` (twin: ``eap._core.netting_py``)."""

import numpy as np
import numpy.typing as npt

_Payments = tuple[
    npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.int64]
]

def net_positions(
    payer: npt.ArrayLike,
    payee: npt.ArrayLike,
    amount: npt.ArrayLike,
    currency: npt.ArrayLike,
    n_parties: int,
    n_currencies: int,
) -> npt.NDArray[np.int64]:
    """Receivable minus payable per party and currency."""

def bilateral(
    payer: npt.ArrayLike,
    payee: npt.ArrayLike,
    amount: npt.ArrayLike,
    currency: npt.ArrayLike,
    n_parties: int,
    n_currencies: int,
) -> _Payments:
    """One payment per pair of parties and currency: ``(payer, payee, currency, amount)``."""

def settlement_instructions(net: npt.ArrayLike) -> _Payments:
    """Payments settling every net position, at most (k - 1) per currency."""

def efficiency(
    amount: npt.ArrayLike, currency: npt.ArrayLike, net: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """``1 - S / G`` per currency (see ``docs/core.md``)."""
