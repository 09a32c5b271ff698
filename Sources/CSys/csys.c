#define _GNU_SOURCE
#include "csys.h"
#include <errno.h>
#include <stdio.h>
#include <signal.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
#include <unistd.h>
#include <stdlib.h>
#include <sys/vfs.h>
#include <sys/syscall.h>
#include <sys/mman.h>

int csys_open(const char *path, int flags, unsigned int mode) { return open(path, flags, (mode_t)mode); }
int csys_o_direct(void) { return O_DIRECT; }
int csys_o_excl(void) { return O_EXCL; }
int csys_o_cloexec(void) { return O_CLOEXEC; }

int csys_blk_size64(int fd, uint64_t *out) { return ioctl(fd, BLKGETSIZE64, out); }
int csys_blk_logical_sector(int fd, int *out) { return ioctl(fd, BLKSSZGET, out); }
int csys_blk_zeroout(int fd, uint64_t offset, uint64_t length) {
    uint64_t range[2] = { offset, length };
    return ioctl(fd, BLKZEROOUT, range);
}
int csys_punch_hole(int fd, int64_t offset, int64_t length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
}
int csys_sync_file_range(int fd, int64_t offset, int64_t length, unsigned int flags) {
    unsigned int f = 0;
    if (flags & 1) f |= SYNC_FILE_RANGE_WAIT_BEFORE;
    if (flags & 2) f |= SYNC_FILE_RANGE_WRITE;
    if (flags & 4) f |= SYNC_FILE_RANGE_WAIT_AFTER;
    return sync_file_range(fd, offset, length, f);
}
int csys_fadvise(int fd, int64_t offset, int64_t length, int advice) {
    int a = advice == 1 ? POSIX_FADV_SEQUENTIAL : advice == 2 ? POSIX_FADV_DONTNEED : POSIX_FADV_NORMAL;
    return posix_fadvise(fd, offset, length, a);
}

/* Drops [offset, offset+length) from the page cache, then counts the pages still resident:
   pages another process keeps mapped (or dirty ones) survive the drop, and a buffered read of
   them comes from memory, not from the medium. -1 when residency cannot be known. */
long csys_resident_after_drop(int fd, int64_t offset, int64_t length) {
    if (length <= 0) return 0;
    posix_fadvise(fd, offset, length, POSIX_FADV_DONTNEED);
    long page = sysconf(_SC_PAGESIZE);
    int64_t start = offset - offset % page;
    size_t span = (size_t)(offset + length - start);
    void *map = mmap(NULL, span, PROT_READ, MAP_SHARED, fd, start);
    if (map == MAP_FAILED) return -1;
    size_t pages = (span + page - 1) / page;
    unsigned char *vec = malloc(pages);
    long resident = -1;
    if (vec && mincore(map, span, vec) == 0) {
        resident = 0;
        for (size_t i = 0; i < pages; i++) resident += vec[i] & 1;
    }
    free(vec);
    munmap(map, span);
    return resident;
}

/* True when the file lives in memory itself (tmpfs, ramfs): its page cache is its medium. */
int csys_memory_backed(int fd) {
    struct statfs s;
    if (fstatfs(fd, &s) != 0) return 0;
    return s.f_type == 0x01021994 || s.f_type == (typeof(s.f_type))0x858458f6;
}

int csys_is_zero(const void *p, size_t n) {
    const unsigned char *b = p;
    // Check a short prefix word by word, then compare the buffer with itself shifted by the
    // prefix: memcmp is vectorised, so this runs at memory bandwidth.
    size_t head = n < 64 ? n : 64;
    for (size_t i = 0; i < head; i++) if (b[i]) return 0;
    if (n <= 64) return 1;
    return memcmp(b, b + 64, n - 64) == 0;
}

#ifndef FERRY_COMMIT
#define FERRY_COMMIT "unknown"
#endif
const char *csys_build_commit(void) { return FERRY_COMMIT; }

static volatile sig_atomic_t interrupt_signal = 0;

static void on_interrupt(int sig) {
    if (interrupt_signal != 0) _exit(128 + sig);
    interrupt_signal = sig;
}

void csys_install_interrupts(void) {
    int sigs[2] = {SIGINT, SIGTERM};
    for (int i = 0; i < 2; i++) {
        struct sigaction old;
        if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN) continue;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_interrupt;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = 0; /* no SA_RESTART: a read blocked on a pipe returns EINTR */
        sigaction(sigs[i], &sa, NULL);
    }
}

int csys_interrupt_signal(void) { return interrupt_signal; }

int csys_ofd_trylock(int fd) {
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 0;
    return fcntl(fd, F_OFD_SETLK, &fl);
}

/* Puts this process in the idle I/O scheduling class (ioprio_set), so an audit's reads wait for
   everyone else's. Returns 0, or -1 with errno. */
int csys_ioprio_idle(void) {
    return (int)syscall(SYS_ioprio_set, 1 /* IOPRIO_WHO_PROCESS */, 0, 3 << 13 /* IOPRIO_CLASS_IDLE */);
}

/* Gives `from` the name `to` unless `to` exists (then -1 with EEXIST): renameat2 with
   RENAME_NOREPLACE, or where the file system lacks it, link then unlink (also never replaces). */
int csys_rename_noreplace(const char *from, const char *to) {
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0) return 0;
    if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) return -1;
    if (link(from, to) != 0) return -1;
    return unlink(from);
}

/* fsync of a folder, so a name just created or renamed in it survives a crash. */
int csys_fsync_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}
