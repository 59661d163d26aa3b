# C-level layout of the validation kernel: result codes and rule bounds (the same numbers as
# eap._core.codes), the per-record flags of the cross-record pass and the compact record the
# device-interval sweep reads.

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

cdef enum:
    FLAG_INTERVAL_OVERLAP = 1
    FLAG_SERIAL_OVERLAP = 2
    FLAG_EXCEEDS_METERED = 4

from libc.stdint cimport int32_t, int64_t


# What the device-interval sweep reads of one valid record, 32 bytes so that one cache line
# holds it whole (the array is 64-byte aligned): gathered in sorted order after the sort.
ctypedef struct DevRec:
    int64_t start
    int64_t wh
    int64_t metered
    int32_t device
    int32_t duration
