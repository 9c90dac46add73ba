/*
 * presync test-guest workload: proves memory continuity across a migration and
 * produces the write patterns of the paper's three application classes.
 *
 * Every write goes through write_page(), which stamps the page with a header
 * (magic, page index, version) and fills the body with a pattern derived from
 * (page, version). The version of every page is also kept in a separate array,
 * so a page that went stale on the target (or a stale version array) disagrees
 * with the other copy and is caught by the continuous verifier.
 *
 * Serial output (one line each, parsed by the host):
 *   HB <counter>                     every ~100 ms
 *   OK <counter> <pages-verified>    every ~1 s while every check has passed
 *   FAIL <reason> ...                once per failure; OK is never printed again
 *
 * Kernel cmdline knobs (read from /proc/cmdline):
 *   presync.mem=<n>[K|M|G]   buffer size (default 64M)
 *   presync.workload=text|audio|movie|idle   (default text)
 *   presync.seed=<n>         PRNG seed (default 1)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u
#define WORDS (PAGE / 8u)
#define MAGIC 0x7072657379ull /* "presy" */
#define TICK_NS 10000000ll    /* 10 ms */

struct hdr {
    uint64_t magic;
    uint64_t page;
    uint64_t version;
};

static uint8_t *buf;
static uint64_t npages;
static uint64_t *versions; /* separate allocation: the cross-check copy */
static volatile uint64_t counter;
static int failed;
static uint64_t rng_state;

static uint64_t rnd(void) {
    /* splitmix64: small, seedable, good enough for workload choices */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t mix(uint64_t page, uint64_t version) {
    uint64_t z = page * 0x9e3779b97f4a7c15ull ^ (version + 0x632be59bd9b4e019ull);
    z = (z ^ (z >> 29)) * 0xbf58476d1ce4e5b9ull;
    return z ^ (z >> 32);
}

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

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec;
}

static void write_page(uint64_t p) {
    if (p >= npages) p %= npages;
    uint64_t v = counter;
    uint64_t *w = (uint64_t *)(buf + p * PAGE);
    uint64_t seed = mix(p, v);
    for (unsigned i = 3; i < WORDS; i++) w[i] = seed ^ ((uint64_t)i * 0xd6e8feb86659fd93ull);
    struct hdr *h = (struct hdr *)w;
    h->magic = MAGIC;
    h->page = p;
    h->version = v;
    versions[p] = v;
}

static void fail(const char *what, uint64_t p, uint64_t want, uint64_t got) {
    char line[200];
    snprintf(line, sizeof line, "FAIL %s page=%llu want=%llu got=%llu counter=%llu\n", what,
             (unsigned long long)p, (unsigned long long)want, (unsigned long long)got,
             (unsigned long long)counter);
    out(line);
    failed = 1;
}

static int verify_page(uint64_t p) {
    const uint64_t *w = (const uint64_t *)(buf + p * PAGE);
    const struct hdr *h = (const struct hdr *)w;
    if (h->magic != MAGIC) { fail("magic", p, MAGIC, h->magic); return 0; }
    if (h->page != p) { fail("index", p, p, h->page); return 0; }
    if (h->version != versions[p]) { fail("version", p, versions[p], h->version); return 0; }
    if (h->version > counter) { fail("future", p, counter, h->version); return 0; }
    uint64_t seed = mix(p, h->version);
    for (unsigned i = 3; i < WORDS; i++) {
        uint64_t want = seed ^ ((uint64_t)i * 0xd6e8feb86659fd93ull);
        if (w[i] != want) { fail("body", p, want, w[i]); return 0; }
    }
    return 1;
}

/* ---- workload classes -------------------------------------------------- */

enum kind { IDLE, TEXT, AUDIO, MOVIE };

/* Page 0 is the superblock: rewritten every tick so the counter in RAM must
 * always match the counter the CPU holds. Workload regions start at page 1. */
struct region { uint64_t first, count; };

static struct region clamp_region(uint64_t first, uint64_t count) {
    struct region r;
    if (first >= npages) first = npages - 1;
    if (count == 0) count = 1;
    if (first + count > npages) count = npages - first;
    r.first = first;
    r.count = count;
    return r;
}

/* text editing: a cursor random-walks through a document; each keystroke
 * rewrites the pages around it and appends to an undo log; every 5 s an
 * autosave burst copies the whole document into a save area. */
static struct region doc, undo, save;
static uint64_t cursor, undo_tail, undo_fill, next_key_tick, next_save_tick;

static void text_init(void) {
    uint64_t usable = npages - 1;
    uint64_t dpages = usable / 8; if (dpages > 1024) dpages = 1024; /* <= 4 MiB document */
    doc = clamp_region(1, dpages);
    undo = clamp_region(doc.first + doc.count, usable / 8 > 2048 ? 2048 : usable / 8);
    save = clamp_region(undo.first + undo.count, doc.count);
    cursor = doc.first + doc.count / 2;
    next_key_tick = 0;
    next_save_tick = 500;
}

static void text_tick(uint64_t tick) {
    if (tick >= next_key_tick) {
        /* ~8 keystrokes/s, jittered like a typist */
        next_key_tick = tick + 6 + rnd() % 14;
        uint64_t r = rnd() % 100;
        if (r < 3) cursor = doc.first + rnd() % doc.count;         /* jump (search, click) */
        else if (r < 60) cursor += (rnd() % 4 == 0);               /* typing moves forward */
        else if (r < 70 && cursor > doc.first) cursor--;           /* backspace */
        if (cursor >= doc.first + doc.count) cursor = doc.first + doc.count - 1;
        write_page(cursor);
        if (rnd() % 4 == 0 && cursor + 1 < doc.first + doc.count) write_page(cursor + 1); /* reflow */
        /* undo log: the tail page is rewritten per record, a new page every 32 records */
        write_page(undo.first + undo_tail);
        if (++undo_fill == 32) {
            undo_fill = 0;
            undo_tail = (undo_tail + 1) % undo.count;
        }
    }
    if (tick >= next_save_tick) {
        next_save_tick = tick + 500;
        for (uint64_t i = 0; i < save.count; i++) write_page(save.first + i);
    }
}

/* audio playback: the decoder fills a PCM ring at 44.1 kHz x 4 B (stereo s16)
 * continuously, and rewrites a few pages of decoder state per 10 ms frame. */
static struct region ring, dec;
static uint64_t pcm_bytes_done;

static void audio_init(void) {
    /* 4 s of audio: 705,600 B, 173 pages */
    ring = clamp_region(1, (44100ull * 4 * 4 + PAGE - 1) / PAGE);
    dec = clamp_region(ring.first + ring.count, 4);
}

static void audio_tick(uint64_t tick) {
    uint64_t want = (tick + 1) * 441ull * 4; /* bytes due after this 10 ms tick */
    uint64_t from = pcm_bytes_done / PAGE, to = (want - 1) / PAGE;
    for (uint64_t b = from; b <= to; b++) write_page(ring.first + b % ring.count);
    pcm_bytes_done = want;
    write_page(dec.first + tick % 2);
    if (tick % 10 == 0) write_page(dec.first + 2 + rnd() % (dec.count > 2 ? dec.count - 2 : 1));
}

/* movie playback: 1280x720x4 B frames at 24 fps into two alternating buffers
 * (double buffering); every pixel page of the back buffer is rewritten. */
static struct region fb[2];
static uint64_t frames_done;

static void movie_init(void) {
    uint64_t fpages = (1280ull * 720 * 4 + PAGE - 1) / PAGE; /* 900 */
    uint64_t usable = npages - 1;
    if (fpages * 2 > usable) fpages = usable / 2 ? usable / 2 : 1;
    fb[0] = clamp_region(1, fpages);
    fb[1] = clamp_region(1 + fpages, fpages);
}

static void movie_tick(uint64_t tick) {
    uint64_t due = (tick + 1) * 24 / 100;
    /* drop frames instead of catching up, like a player that fell behind */
    if (due > frames_done + 1) frames_done = due - 1;
    while (frames_done < due) {
        struct region r = fb[frames_done & 1];
        for (uint64_t i = 0; i < r.count; i++) write_page(r.first + i);
        frames_done++;
    }
}

static void idle_tick(uint64_t tick) {
    if (tick % 100 == 0) write_page(1 + rnd() % (npages - 1));
}

/* ---- setup --------------------------------------------------------------- */

static char cmdline[4096];

static const char *param(const char *key) {
    size_t kl = strlen(key);
    for (char *p = cmdline; (p = strstr(p, key)) != NULL; p += kl) {
        if ((p == cmdline || p[-1] == ' ') && p[kl] == '=') return p + kl + 1;
    }
    return NULL;
}

static uint64_t parse_size(const char *s, uint64_t dflt) {
    if (!s) return dflt;
    char *end;
    unsigned long long n = strtoull(s, &end, 10);
    if (end == s) return dflt;
    switch (*end) {
    case 'k': case 'K': n <<= 10; break;
    case 'm': case 'M': n <<= 20; break;
    case 'g': case 'G': n <<= 30; break;
    default: break;
    }
    return n;
}

static int word_is(const char *v, const char *w) {
    size_t n = strlen(w);
    return v && strncmp(v, w, n) == 0 && (v[n] == 0 || v[n] == ' ' || v[n] == '\n');
}

int main(void) {
    int fd = open("/proc/cmdline", O_RDONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, cmdline, sizeof cmdline - 1);
        if (n > 0) cmdline[n] = 0;
        close(fd);
    }
    uint64_t bytes = parse_size(param("presync.mem"), 64ull << 20);
    if (bytes < 16 * PAGE) bytes = 16 * PAGE;
    npages = bytes / PAGE;
    const char *wl = param("presync.workload");
    enum kind kind = TEXT;
    const char *kname = "text";
    if (word_is(wl, "idle")) { kind = IDLE; kname = "idle"; }
    else if (word_is(wl, "audio")) { kind = AUDIO; kname = "audio"; }
    else if (word_is(wl, "movie")) { kind = MOVIE; kname = "movie"; }
    rng_state = parse_size(param("presync.seed"), 1);

    buf = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    versions = calloc(npages, sizeof *versions);
    if (buf == MAP_FAILED || !versions) {
        out("FAIL alloc\n");
        return 1;
    }
    counter = 1;
    for (uint64_t p = 0; p < npages; p++) write_page(p);

    switch (kind) {
    case TEXT: text_init(); break;
    case AUDIO: audio_init(); break;
    case MOVIE: movie_init(); break;
    case IDLE: break;
    }
    char line[160];
    snprintf(line, sizeof line, "START workload=%s pages=%llu\n", kname, (unsigned long long)npages);
    out(line);

    /* Verify the whole buffer about every 2 s of ticks, one slice per tick. */
    uint64_t slice = npages / 200 + 1, vpos = 0, verified = 0;
    int64_t next = now_ns(), next_hb = next, next_ok = next + 1000000000ll;
    for (uint64_t tick = 0;; tick++) {
        counter++;
        uint64_t held = counter;
        write_page(0);
        switch (kind) {
        case TEXT: text_tick(tick); break;
        case AUDIO: audio_tick(tick); break;
        case MOVIE: movie_tick(tick); break;
        case IDLE: idle_tick(tick); break;
        }
        const struct hdr *sb = (const struct hdr *)buf;
        if (sb->version != held || counter != held) fail("superblock", 0, held, sb->version);
        for (uint64_t i = 0; i < slice; i++) {
            verified += (uint64_t)verify_page(vpos);
            vpos = (vpos + 1) % npages;
        }

        int64_t t = now_ns();
        if (t >= next_hb) {
            snprintf(line, sizeof line, "HB %llu\n", (unsigned long long)counter);
            out(line);
            next_hb += 100000000ll;
            if (next_hb < t) next_hb = t + 100000000ll;
        }
        if (t >= next_ok) {
            if (!failed) {
                snprintf(line, sizeof line, "OK %llu %llu\n", (unsigned long long)counter,
                         (unsigned long long)verified);
                out(line);
            }
            next_ok += 1000000000ll;
            if (next_ok < t) next_ok = t + 1000000000ll;
        }
        next += TICK_NS;
        if (next < t - 1000000000ll) next = t; /* after a long pause (migration), do not spin to catch up */
        if (next > t) {
            struct timespec ts = {(time_t)((next - t) / 1000000000ll), (long)((next - t) % 1000000000ll)};
            nanosleep(&ts, NULL);
        }
    }
}
