// Thin C seams for what Swift's Glibc module does not import: O_DIRECT, fallocate and its
// FALLOC_FL_* flags, sync_file_range, the BLK* ioctls, and a fast all-zero test.
#ifndef CSYS_H
#define CSYS_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/// open(2) with an explicit mode (open is variadic in C). Returns fd or -1 with errno set.
int csys_open(const char *path, int flags, unsigned int mode);
/// The O_DIRECT, O_EXCL, O_CLOEXEC and O_NOFOLLOW flag values.
int csys_o_direct(void);
int csys_o_excl(void);
int csys_o_cloexec(void);

/// BLKGETSIZE64: size in bytes of a block device. 0 or -1 (errno).
int csys_blk_size64(int fd, uint64_t *out);
/// BLKSSZGET: logical sector size of a block device.
int csys_blk_logical_sector(int fd, int *out);
/// BLKZEROOUT over [offset, offset+length).
int csys_blk_zeroout(int fd, uint64_t offset, uint64_t length);
/// fallocate(PUNCH_HOLE|KEEP_SIZE).
int csys_punch_hole(int fd, int64_t offset, int64_t length);
/// sync_file_range with the given flags (1 = WAIT_BEFORE, 2 = WRITE, 4 = WAIT_AFTER).
int csys_sync_file_range(int fd, int64_t offset, int64_t length, unsigned int flags);
/// posix_fadvise: 1 = SEQUENTIAL, 2 = DONTNEED. Returns 0 or an errno value.
int csys_fadvise(int fd, int64_t offset, int64_t length, int advice);
long csys_resident_after_drop(int fd, int64_t offset, int64_t length);
int csys_memory_backed(int fd);

/// Takes a write lock on the whole of `fd`'s file that belongs to its open file description
/// (F_OFD_SETLK): another process, or another open of the file, cannot take it while this
/// description is open. 0, or -1 with errno (EAGAIN or EACCES: held elsewhere).
int csys_ofd_trylock(int fd);
int csys_rename_noreplace(const char *from, const char *to);
int csys_fsync_dir(const char *path);
int csys_ioprio_idle(void);

/// The commit this binary was built from (FERRY_COMMIT at build time), or "unknown".
const char *csys_build_commit(void);

/// Installs ferry's SIGINT and SIGTERM handler (a signal that was ignored when ferry started
/// stays ignored). The first signal is only recorded: blocking calls return EINTR and the work
/// loops stop at the next chunk. A second signal ends the process at once with 128 + signal.
void csys_install_interrupts(void);
/// The signal number recorded by the handler, or 0.
int csys_interrupt_signal(void);

/// 1 when all n bytes are zero. Memory-bandwidth speed (word scan + memcmp against itself).
int csys_is_zero(const void *p, size_t n);
#endif
