/*
 * presync real-VM guest services (test-guest/README.md, "The real VM"):
 *
 *   guestd echo PORT        TCP echo service: every byte a client sends comes
 *                           straight back (one process per connection,
 *                           TCP_NODELAY), so a client outside the guest sees
 *                           every gap in the guest's reachability.
 *   guestd disk FILE [MS]   disk writer: appends one checksummed,
 *                           sequence-numbered 64-byte record to FILE every MS
 *                           milliseconds (default 20) and fsyncs each; checks
 *                           every record on the disk at start and every ~1 s,
 *                           reading with O_DIRECT so the check sees the disk,
 *                           not the guest's page cache.
 *
 * Disk writer serial lines (one write() each, so they never interleave with
 * the memory workload's HB/OK lines):
 *   DISK START records=<n>                   the records found at start, all valid
 *   DISK OK <written> <verified>             every ~1 s while every check has passed:
 *                                            <written> records fsynced by this
 *                                            writer's lifetime (it lives in guest
 *                                            memory, so a migrated guest continues
 *                                            the count), <verified> read back valid
 *   DISK FAIL <what> record=<i> ...          once per failure; DISK OK is never printed again
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REC 64u
#define REC_MAGIC 0x3130534b53494450ull /* "PDISKS01" little-endian */

struct record {
    uint64_t magic;
    uint64_t seq;
    uint64_t written_ns; /* guest CLOCK_REALTIME at write: for humans */
    uint64_t payload[4]; /* derived from seq */
    uint64_t sum;        /* FNV-1a over the first 56 bytes */
};

_Static_assert(sizeof(struct record) == REC, "record size");

static void out(const char *s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(1, s, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return;
        }
        s += w;
        n -= (size_t)w;
    }
}

static uint64_t fnv(const void *p, size_t n) {
    const uint8_t *b = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t mix(uint64_t seq, uint64_t k) {
    uint64_t z = seq * 0x9e3779b97f4a7c15ull + k * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 30)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void make_record(struct record *r, uint64_t seq) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    r->magic = REC_MAGIC;
    r->seq = seq;
    r->written_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    for (unsigned k = 0; k < 4; k++) r->payload[k] = mix(seq, k);
    r->sum = fnv(r, offsetof(struct record, sum));
}

/* Why record `r` at index `i` is bad, or NULL. */
static const char *bad_record(const struct record *r, uint64_t i) {
    if (r->magic != REC_MAGIC) return "magic";
    if (r->sum != fnv(r, offsetof(struct record, sum))) return "checksum";
    if (r->seq != i) return "sequence";
    for (unsigned k = 0; k < 4; k++)
        if (r->payload[k] != mix(i, k)) return "payload";
    return NULL;
}

static int failed;

static void fail(const char *what, uint64_t i, const char *detail) {
    char line[512];
    snprintf(line, sizeof line, "DISK FAIL %s record=%llu %s\n", what, (unsigned long long)i, detail);
    out(line);
    failed = 1;
}

/*
 * Reads FILE with O_DIRECT and checks every whole record. Returns the number
 * of valid records before the first bad one; *trailing gets the bytes of a
 * partial record at the end (a write cut by a crash), *bad the first bad index.
 */
static uint64_t check_file(const char *path, uint64_t *trailing, const char **why, uint64_t *bad) {
    *trailing = 0;
    *why = NULL;
    *bad = 0;
    int fd = open(path, O_RDONLY | O_DIRECT);
    if (fd < 0) fd = open(path, O_RDONLY); /* a file system without O_DIRECT */
    if (fd < 0) {
        *why = errno == ENOENT ? NULL : "open";
        return 0;
    }
    const size_t chunk = 1u << 20;
    void *buf = NULL;
    if (posix_memalign(&buf, 4096, chunk) != 0) {
        close(fd);
        *why = "memory";
        return 0;
    }
    uint64_t n = 0;
    uint64_t total = 0;
    for (;;) {
        ssize_t got = pread(fd, buf, chunk, (off_t)total);
        if (got < 0) {
            if (errno == EINTR) continue;
            *why = "read";
            break;
        }
        if (got == 0) break;
        size_t whole = (size_t)got / REC * REC;
        for (size_t off = 0; off < whole; off += REC, n++) {
            const char *b = bad_record((const struct record *)((char *)buf + off), n);
            if (b) {
                *why = b;
                *bad = n;
                goto done;
            }
        }
        total += (uint64_t)got;
        if ((size_t)got < chunk) {
            *trailing = (uint64_t)got - whole;
            break;
        }
    }
done:
    free(buf);
    close(fd);
    return n;
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int disk_writer(const char *path, int period_ms) {
    char line[256];
    uint64_t trailing;
    const char *why;
    uint64_t bad;
    uint64_t found = check_file(path, &trailing, &why, &bad);
    if (why) fail(why, bad, "at start");
    int fd = open(path, O_WRONLY | O_CREAT, 0644);
    if (fd < 0) {
        fail("open", 0, strerror(errno));
        return 1;
    }
    /* A record cut by a crash is not an error of this run: the next one overwrites it. */
    if (trailing && ftruncate(fd, (off_t)(found * REC)) != 0) fail("truncate", found, strerror(errno));
    snprintf(line, sizeof line, "DISK START records=%llu trailing=%llu\n", (unsigned long long)found, (unsigned long long)trailing);
    out(line);
    uint64_t next = found;
    int64_t last_check = now_ms();
    struct timespec period = {period_ms / 1000, (long)(period_ms % 1000) * 1000000l};
    for (;;) {
        struct record r;
        make_record(&r, next);
        ssize_t w = pwrite(fd, &r, REC, (off_t)(next * REC));
        if (w != (ssize_t)REC) {
            if (w < 0 && errno == EINTR) continue;
            if (!failed) fail("write", next, w < 0 ? strerror(errno) : "short");
        } else if (fdatasync(fd) != 0) {
            if (!failed) fail("fsync", next, strerror(errno));
        } else {
            next++;
        }
        if (now_ms() - last_check >= 1000) {
            last_check = now_ms();
            uint64_t got = check_file(path, &trailing, &why, &bad);
            if (!failed) {
                if (why) fail(why, bad, "on disk");
                else if (got != next) {
                    snprintf(line, sizeof line, "disk holds %llu, %llu fsynced", (unsigned long long)got, (unsigned long long)next);
                    fail("count", got, line);
                } else if (trailing) fail("trailing", got, "partial record after an fsync");
            }
            if (!failed) {
                snprintf(line, sizeof line, "DISK OK %llu %llu\n", (unsigned long long)next, (unsigned long long)got);
                out(line);
            }
        }
        nanosleep(&period, NULL);
    }
}

static void serve_conn(int c) {
    char buf[4096];
    for (;;) {
        ssize_t n = read(c, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(c, buf + off, (size_t)(n - off));
            if (w < 0) {
                if (errno == EINTR) continue;
                _exit(0);
            }
            off += w;
        }
    }
    _exit(0);
}

static int echo_server(int port) {
    signal(SIGCHLD, SIG_IGN); /* children are reaped by the kernel */
    signal(SIGPIPE, SIG_IGN);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr = {htonl(INADDR_ANY)}};
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 16) != 0) {
        char line[128];
        snprintf(line, sizeof line, "ECHO FAIL listen port=%d %s\n", port, strerror(errno));
        out(line);
        return 1;
    }
    char line[64];
    snprintf(line, sizeof line, "ECHO LISTEN %d\n", port);
    out(line);
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0) continue;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pid_t p = fork();
        if (p == 0) {
            close(s);
            serve_conn(c);
        }
        close(c);
    }
}

int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "echo") == 0) return echo_server(atoi(argv[2]));
    if (argc >= 3 && strcmp(argv[1], "disk") == 0) return disk_writer(argv[2], argc >= 4 ? atoi(argv[3]) : 20);
    out("usage: guestd echo PORT | guestd disk FILE [PERIOD_MS]\n");
    return 2;
}
