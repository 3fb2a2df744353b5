/* fuzz_util.h — shared by the libFuzzer targets: the input as a private temporary
 * file (the readers under test take paths). */
#ifndef FLOWDP_FUZZ_UTIL_H
#define FLOWDP_FUZZ_UTIL_H
#include <stddef.h>
#include <stdint.h>

/* Write data to this process's scratch file number `slot` (0..3) and return its
 * path (valid until the next call with the same slot). Aborts on I/O errors: the
 * harness, not the code under test, is broken then. */
const char *fuzz_write_file(int slot, const uint8_t *data, size_t size);
#endif
