"""Type stub of the compiled ``eap._core.validate`` (twin: ``eap._core.validate_py``)."""

import numpy as np
import numpy.typing as npt

#: The kernel's C enum of rule codes, in code order (must equal ``range(13)``).
_C_CODES: tuple[int, ...]
#: The kernel's C bounds of the per-record rules, by ``eap._core.codes`` name.
_C_LIMITS: dict[str, int]

def validate(
    serial_start: npt.ArrayLike,
    serial_end: npt.ArrayLike,
    device: npt.ArrayLike,
    interval_start: npt.ArrayLike,
    interval_end: npt.ArrayLike,
    source: npt.ArrayLike,
    technology: npt.ArrayLike,
    renewable_ppm: npt.ArrayLike,
    carbon_mg: npt.ArrayLike,
    capacity_w: npt.ArrayLike,
    metered_wh: npt.ArrayLike,
) -> npt.NDArray[np.uint8]:
    """Rule code of every record (0 = OK); see ``eap._core.validate_py.validate``."""
