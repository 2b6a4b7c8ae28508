/* nofsync.h - for `make bench-e2e-nofsync` only: included into every file
 * of a separate build (build-nofsync/) so that fsync() does nothing. That
 * build loses acknowledged mail on a crash and is never installed; it
 * exists to measure what the per-message fsyncs cost (bench/README.md). */
#include <unistd.h>

static inline int nofsync_(int fd)
{
    (void)fd;
    return 0;
}
#define fsync(fd) nofsync_(fd)
