/* outpath.h — checking an output path before any work, and writing it atomically.
 *
 * How to use it (every program, for every file or directory it will write):
 *
 *   1. Right after parsing the command line, before loading data or computing:
 *        fdp_out_input in[] = {{ckpt, "the input checkpoint"}, {data, "the test set"}};
 *        if (fdp_out_check("--json", json, FDP_OUT_JSON, force, in, 2, &err) != 0) {
 *            fprintf(stderr, "flowdp-eval: %s\n", err.msg);   // one line
 *            exit 2;                                            // bad input
 *        }
 *      The message starts with "<label> <path>: " (or "<path>: " when label is NULL):
 *        -o /ro/x.png: cannot write into /ro: Read-only file system
 *        --json run/ckpt.h5: is the input checkpoint; choose another file
 *        -o notes.txt: exists and is not a PNG file; pass --force to replace it
 *   2. Write the file with fdp_out_write_file (a buffer) or the fdp_out_open /
 *      fdp_out_commit pair (a FILE* to write into; fdp_out_abort on failure):
 *      the bytes go to a temporary file in the same directory (<path>.tmp.<pid>.<k>),
 *      which is flushed, fsynced, and renamed over path, so a failure half-way
 *      never leaves a truncated file in place of an old one (the old file stays).
 *
 * What fdp_out_check refuses (returns -1, err filled), in this order:
 *   - an empty path, or one ending in '/';
 *   - an input: path is the same file (st_dev/st_ino, so also through symlinks
 *     and hard links) as one of inputs[]: refused even with force;
 *   - path is a directory (kind != FDP_OUT_DIR), or exists and is not a regular
 *     file (a device, a FIFO: a rename would replace it);
 *   - the parent directory is missing, not a directory or not writable: checked
 *     with access(W_OK|X_OK) (which also reports EROFS, even for root) and then by
 *     creating and removing a temporary file in it (root passes access() whatever
 *     the permission bits say). The reason is strerror's text;
 *   - path exists, is not empty and is not of the kind (see fdp_out_is_kind),
 *     unless force. An empty file may always be replaced.
 * FDP_OUT_DIR is for a directory the caller will create (mkdir -p) and write
 * into: path must be a directory if it exists, and the nearest existing
 * ancestor (path itself when it exists) must be a writable directory.
 * FDP_OUT_HDF5 accepts any HDF5 file (checkpoint, metrics file, shard): a caller
 * that must tell them apart opens the file itself after this check.
 *
 * Under MPI, let one rank (the writer) check and agree on the result with a
 * collective (fdp_comm_any) before anyone prints, so the error prints once. */
#ifndef FLOWDP_OUTPATH_H
#define FLOWDP_OUTPATH_H
#include <stddef.h>
#include <stdio.h>

#include "flowdp/error.h"

typedef enum fdp_out_kind {
    FDP_OUT_ANY = 0, /* any regular file may be replaced (no content check) */
    FDP_OUT_PNG,     /* the 8-byte PNG signature */
    FDP_OUT_JSON,    /* first non-blank byte '{' */
    FDP_OUT_HDF5,    /* the HDF5 signature at offset 0, 512, 1024, ... (user block) */
    FDP_OUT_DIR      /* a directory to write files into */
} fdp_out_kind;

/* one input of the program: its path and what it is, in words ("the input checkpoint") */
typedef struct fdp_out_input {
    const char *path; /* NULL or "" entries are skipped */
    const char *what;
} fdp_out_input;

/* Check path as an output of kind before any work (see above). label: the
 * option that named it ("-o", "--json") or NULL. Returns 0 or -1 (err filled). */
int fdp_out_check(const char *label, const char *path, fdp_out_kind kind, int force, const fdp_out_input *inputs,
                  int n_inputs, fdp_err *err);

/* 1 when the file at path is of kind (FDP_OUT_ANY: always; FDP_OUT_DIR: a
 * directory), 0 when not, -1 when it cannot be opened or read (errno set). */
int fdp_out_is_kind(const char *path, fdp_out_kind kind);
/* 1 when a and b both exist and are the same file (stat: through symlinks), else 0. */
int fdp_out_same_file(const char *a, const char *b);
/* "PNG", "JSON", "HDF5", "directory" or "file" */
const char *fdp_out_kind_name(fdp_out_kind kind);

/* ---- atomic writing ------------------------------------------------------------- */
typedef struct fdp_out_file {
    FILE *fp;   /* write here between open and commit */
    char *path; /* the final name (a copy) */
    char *tmp;  /* the temporary file */
} fdp_out_file;

/* Create the temporary file for path (O_EXCL, in path's directory); o->fp is open
 * for writing. When path exists, the temporary file gets its permission bits.
 * Returns 0 or -1 (err: "cannot write <path>: <strerror>"; o is then empty). */
int fdp_out_open(fdp_out_file *o, const char *path, fdp_err *err);
/* Flush, fsync, close and rename over path (then fsync the directory, best
 * effort). On failure the temporary file is removed and path is untouched.
 * Either way o is emptied. Returns 0 or -1 (err filled). */
int fdp_out_commit(fdp_out_file *o, fdp_err *err);
/* Close and remove the temporary file; path is untouched. o may be empty. */
void fdp_out_abort(fdp_out_file *o);
/* open + fwrite(data, n) + commit. Returns 0 or -1 (err filled). */
int fdp_out_write_file(const char *path, const void *data, size_t n, fdp_err *err);

#endif
