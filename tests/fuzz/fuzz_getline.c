/* fuzz_getline.c - libFuzzer target: the CR/LF-aware line reader. The input
 * is fed through a pipe; every line must stay within the limit, and the bytes
 * returned plus the line ends consumed must add up to the input. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int p[2];
    if (size > 60000 || pipe(p) < 0) return 0;
    if (size && write(p[1], data, size) != (ssize_t)size) { close(p[0]); close(p[1]); return 0; }
    close(p[1]);
    unsigned char mem[37];  /* odd, small buffer: exercises refills and CR at the edge */
    struct io in;
    io_init(&in, p[0], mem, sizeof mem, 1000);
    char line[16];
    size_t len, total = 0;
    enum io_eol eol;
    while (io_getline(&in, line, sizeof line, &len, &eol)) {
        if (len > sizeof line) __builtin_trap();
        if (memcmp(line, data + total, len)) __builtin_trap();
        total += len + (eol == IO_EOL_CRLF ? 2 : eol == IO_EOL_NONE ? 0 : 1);
        if (total > size) __builtin_trap();
    }
    if (total != size) __builtin_trap();
    close(p[0]);
    return 0;
}
