# C-level layout of the validation kernel: result codes and rule bounds (the same numbers as
# eap._core.codes) and the per-record flags of the cross-record rules.

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

# Bounds of the per-record rules (the same numbers as eap._core.codes).
cdef enum:
    C_MAX_INTERVAL_S = 3600
    C_SOURCE_MAX = 12
    C_TECHNOLOGY_MAX = 14
    C_RENEWABLE_PPM_MAX = 1000000
    C_CARBON_MG_MAX = 2000000

# While the kernel runs, a valid record's code (0) carries the cross-record rules it breaks as
# flags above the codes of rules 1-9 (which fit the low four bits); a last pass turns them into
# the code of the first such rule.
cdef enum:
    CODE_MASK = 0x0F
    FLAG_INTERVAL_OVERLAP = 0x10
    FLAG_SERIAL_OVERLAP = 0x20
    FLAG_EXCEEDS_METERED = 0x40
