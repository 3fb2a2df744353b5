/* fuzz_util.c — scratch files for the fuzz targets, in $TMPDIR (default /tmp),
 * removed at exit. */
#include "fuzz_util.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_dir[256];
static char g_paths[4][300];

static void remove_dir(void) {
    for (int i = 0; i < 4; i++)
        if (g_paths[i][0]) unlink(g_paths[i]);
    if (g_dir[0]) rmdir(g_dir);
}

const char *fuzz_write_file(int slot, const uint8_t *data, size_t size) {
    if (slot < 0 || slot > 3) abort();
    if (!g_dir[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(g_dir, sizeof g_dir, "%s/flowdp-fuzz.XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(g_dir)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(remove_dir);
    }
    snprintf(g_paths[slot], sizeof g_paths[slot], "%s/in%d", g_dir, slot);
    int fd = open(g_paths[slot], O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        perror("fuzz: open");
        abort();
    }
    for (size_t o = 0; o < size;) {
        ssize_t w = write(fd, data + o, size - o);
        if (w <= 0) {
            perror("fuzz: write");
            abort();
        }
        o += (size_t)w;
    }
    close(fd);
    return g_paths[slot];
}
