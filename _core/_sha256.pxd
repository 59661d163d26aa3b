# The bundled SHA-256 (csrc/eap_sha256.h): declarations for the kernels that hash.

from libc.stdint cimport uint8_t

cdef extern from "eap_sha256.h" nogil:
    int eap_sha256_select()
    void eap_sha256_use_portable()
    int eap_sha256_is_shani()
    size_t eap_sha256_padded_blocks(size_t length)
    void eap_sha256_pad(uint8_t* buf, size_t length)
    void eap_sha256_blocks(const uint8_t* buf, size_t nblocks, uint8_t* out)
    void eap_sha256_prefixed(int prefix, const uint8_t* msg, size_t length, uint8_t* out)
