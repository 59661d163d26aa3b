# C-level layout of the validation kernel: result codes (the same numbers as eap._core.codes)
# and the per-record flags of the cross-record pass.

cdef enum:
    C_OK = 0
    C_INTERVAL_EMPTY = 1
    C_INTERVAL_TOO_LONG = 2
    C_INTERVAL_MISALIGNED = 3
    C_SERIAL_RANGE_INVALID = 4
    C_SOURCE_INVALID = 5
    C_TECHNOLOGY_INVALID = 6
    C_RENEWABLE_SHARE_OUT_OF_RANGE = 7
    C_CARBON_INTENSITY_OUT_OF_RANGE = 8
    C_EXCEEDS_CAPACITY = 9
    C_INTERVAL_OVERLAP = 10
    C_SERIAL_OVERLAP = 11
    C_EXCEEDS_METERED = 12

cdef enum:
    FLAG_INTERVAL_OVERLAP = 1
    FLAG_SERIAL_OVERLAP = 2
    FLAG_EXCEEDS_METERED = 4
