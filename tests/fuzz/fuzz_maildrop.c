/* fuzz_maildrop.c - libFuzzer target: POP3 message streaming (RETR/TOP:
 * CRLF line ends, dot-stuffing, header/body split), its size computation and
 * message-number parsing. The message is an anonymous memory file; output
 * goes to a second one. Checks: RETR output minus the added dots is
 * maildrop_size_fd octets then ".\r\n"; every LF is part of a CRLF and the
 * output ends with one (a bare CR inside a line is passed on); TOP output is
 * a prefix of RETR output (plus the end marker). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "maildrop.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned char out1[1 << 18], out2[1 << 18];

static size_t run(int msg, long long top, unsigned char *dst, size_t cap)
{
    int o = memfd_create("out", 0);
    if (lseek(msg, 0, SEEK_SET) != 0) abort();   /* the reader reads from the offset */
    unsigned char mem[512];
    struct io io;
    if (o < 0) abort();
    io_init(&io, o, mem, sizeof mem, 1000);
    if (!maildrop_send_fd(msg, top, &io) || !io_flush(&io)) __builtin_trap();
    size_t n = 0;
    ssize_t r;
    while (n < cap && (r = pread(o, dst + n, cap - n, (off_t)n)) > 0) n += (size_t)r;
    close(o);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 20000) return 0;
    unsigned long long num;
    if (maildrop_parse_number((const char *)data, size, &num) && (data[0] < '0' || data[0] > '9'))
        __builtin_trap();
    int m = memfd_create("msg", 0);
    if (m < 0) abort();
    if (size > 1 && write(m, data + 1, size - 1) != (ssize_t)(size - 1)) abort();
    unsigned long long sz = 0;
    if (lseek(m, 0, SEEK_SET) != 0) abort();
    if (!maildrop_size_fd(m, &sz)) __builtin_trap();
    size_t n1 = run(m, -1, out1, sizeof out1);
    if (n1 < 3 || memcmp(out1 + n1 - 3, ".\r\n", 3)) __builtin_trap();
    /* every line ends in CRLF; count the stuffed dots */
    size_t dots = 0;
    int bol = 1;
    for (size_t i = 0; i < n1 - 3; i++) {
        if (out1[i] == '\n' && (i == 0 || out1[i - 1] != '\r')) __builtin_trap();
        if (bol && out1[i] == '.') {
            if (i + 1 >= n1 - 3 || out1[i + 1] != '.') __builtin_trap();
            dots++;
            i++;
        }
        bol = out1[i] == '\n';
    }
    if (!bol && n1 > 3) __builtin_trap();
    if (n1 - 3 - dots != sz) __builtin_trap();
    size_t n2 = run(m, data[0] % 8, out2, sizeof out2);
    if (n2 < 3 || n2 > n1 || memcmp(out2, out1, n2 - 3) || memcmp(out2 + n2 - 3, ".\r\n", 3)) __builtin_trap();
    close(m);
    return 0;
}
