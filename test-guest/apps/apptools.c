/*
 * apptools: the small pieces around the real programs of the test guest
 * (test-guest/apps/README.md). Not a workload itself: the programs are Debian's.
 *
 *   apptools gen-wav SECONDS          > song.wav   (build time: a tune to encode with flac)
 *   apptools gen-y4m W H FPS FRAMES   > clip.y4m   (build time: a clip to encode with vpxenc)
 *   apptools gen-lines N SEED         > lines.txt  (guest: N pseudo-random text lines for sort)
 *   apptools sink BYTES_PER_SEC RING_BYTES NAME  < stream
 *       the "device" a player writes to: reads its stdin at a fixed rate
 *       (a sound card's or display's pace; the pipe makes the decoder keep
 *       up with it) into a ring in its own memory, the way a DMA ring or a
 *       frame buffer is rewritten, and prints "APP NAME <bytes> <crc>" every
 *       second: <bytes> counts the stream, <crc> is a running CRC-32 of
 *       everything read, the program's own proof of progress.
 *   apptools keys SECONDS           the editor's typist: keystrokes for vim
 *       on stdout at ~8/s, with an autosave (:w) every 5 s, for SECONDS.
 *
 * Everything is deterministic given its arguments.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static void put16(FILE *f, unsigned v) { fputc(v & 255, f); fputc((v >> 8) & 255, f); }
static void put32(FILE *f, unsigned v) { put16(f, v & 0xffff); put16(f, v >> 16); }

static int gen_wav(int seconds) {
  const unsigned rate = 44100, ch = 2, bits = 16;
  unsigned frames = rate * (unsigned)seconds;
  unsigned data = frames * ch * bits / 8;
  fwrite("RIFF", 1, 4, stdout); put32(stdout, 36 + data); fwrite("WAVEfmt ", 1, 8, stdout);
  put32(stdout, 16); put16(stdout, 1); put16(stdout, ch); put32(stdout, rate);
  put32(stdout, rate * ch * bits / 8); put16(stdout, ch * bits / 8); put16(stdout, bits);
  fwrite("data", 1, 4, stdout); put32(stdout, data);
  /* A melody: a note every 250 ms from a pentatonic scale, with a little noise so flac has work. */
  static const double scale[] = {261.63, 293.66, 329.63, 392.00, 440.00, 523.25};
  double phase = 0, freq = scale[0];
  for (unsigned i = 0; i < frames; i++) {
    if (i % (rate / 4) == 0) freq = scale[rnd() % 6];
    phase += 2 * M_PI * freq / rate;
    double env = 1.0 - (double)(i % (rate / 4)) / (rate / 4);
    int s = (int)(12000 * env * sin(phase)) + (int)(rnd() % 64) - 32;
    put16(stdout, (unsigned)(s & 0xffff));
    put16(stdout, (unsigned)((s / 2) & 0xffff));
  }
  return fflush(stdout) == 0 ? 0 : 1;
}

static int gen_y4m(int w, int h, int fps, int frames) {
  printf("YUV4MPEG2 W%d H%d F%d:1 Ip A1:1 C420jpeg\n", w, h, fps);
  unsigned char *buf = malloc((size_t)w * h * 3 / 2);
  if (!buf) return 1;
  for (int f = 0; f < frames; f++) {
    /* A moving gradient and a bouncing square: motion for the encoder's predictor. */
    int bx = (f * 7) % (w - 32), by = (int)((h - 32) * (0.5 + 0.5 * sin(f / 10.0)));
    for (int y = 0; y < h; y++)
      for (int x = 0; x < w; x++) {
        int in = x >= bx && x < bx + 32 && y >= by && y < by + 32;
        buf[y * w + x] = in ? 235 : (unsigned char)((x + y + 2 * f) & 255);
      }
    for (int i = 0; i < w * h / 2; i++) buf[w * h + i] = (unsigned char)(128 + ((i / (w / 2) + f) % 32) - 16);
    fputs("FRAME\n", stdout);
    fwrite(buf, 1, (size_t)w * h * 3 / 2, stdout);
  }
  free(buf);
  return fflush(stdout) == 0 ? 0 : 1;
}

static int gen_lines(long n, unsigned long seed) {
  rng_state ^= seed * 0x9E3779B97F4A7C15ull;
  static const char *words[] = {"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa"};
  for (long i = 0; i < n; i++) {
    printf("%016llx", (unsigned long long)rnd());
    int k = 2 + (int)(rnd() % 6);
    for (int j = 0; j < k; j++) printf(" %s", words[rnd() % 16]);
    printf(" %ld\n", i);
  }
  return fflush(stdout) == 0 ? 0 : 1;
}

static uint32_t crc_table[256];
static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    crc_table[i] = c;
  }
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int sink(long rate, long ring_bytes, const char *name) {
  crc_init();
  unsigned char *ring = malloc((size_t)ring_bytes);
  if (!ring) return 1;
  memset(ring, 0, (size_t)ring_bytes);
  const double tick = 0.01; /* a 10 ms period, as a sound card's */
  long per_tick = (long)(rate * tick);
  long pos = 0;
  unsigned long long total = 0;
  uint32_t crc = 0xffffffffu;
  double start = now(), next_report = start + 1;
  for (long k = 1;; k++) {
    long want = per_tick;
    while (want > 0) {
      long chunk = ring_bytes - pos < want ? ring_bytes - pos : want;
      ssize_t r = read(0, ring + pos, (size_t)chunk);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        printf("APP %s %llu %08x end\n", name, total, crc ^ 0xffffffffu);
        fflush(stdout);
        return 0;
      }
      for (ssize_t i = 0; i < r; i++) crc = crc_table[(crc ^ ring[pos + i]) & 255] ^ (crc >> 8);
      pos = (pos + r) % ring_bytes;
      want -= r;
      total += (unsigned long long)r;
    }
    double t = now();
    if (t >= next_report) {
      printf("APP %s %llu %08x\n", name, total, crc ^ 0xffffffffu);
      fflush(stdout);
      next_report += 1;
    }
    double due = start + k * tick;
    if (due > t) usleep((useconds_t)((due - t) * 1e6));
  }
}

static int keys(int seconds) {
  /* A typist at ~8 keys/s in insert mode; every 5 s an autosave (:w), every
   * ~40 s a jump to another line (G / gg / a line number), as an editor is used. */
  static const char *text = "the quick brown fox jumps over the lazy dog while presync keeps the standby warm ";
  size_t tl = strlen(text), i = 0;
  double start = now(), last_save = start, last_jump = start;
  fputs("i", stdout);
  while (now() - start < seconds) {
    char c = text[i++ % tl];
    if (rnd() % 50 == 0) fputs("\x08", stdout); /* a backspace */
    else if (rnd() % 70 == 0) fputs("\r", stdout); /* a new line */
    else fputc(c, stdout);
    fflush(stdout);
    usleep(60000 + (useconds_t)(rnd() % 120000));
    double t = now();
    if (t - last_save >= 5) {
      fputs("\x1b:w\ri", stdout);
      last_save = t;
    }
    if (t - last_jump >= 40) {
      printf("\x1b%s", rnd() % 2 ? "gg" : "G");
      printf("o");
      last_jump = t;
    }
  }
  fputs("\x1b:wq\r", stdout);
  return fflush(stdout) == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc >= 3 && !strcmp(argv[1], "gen-wav")) return gen_wav(atoi(argv[2]));
  if (argc >= 6 && !strcmp(argv[1], "gen-y4m")) return gen_y4m(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
  if (argc >= 4 && !strcmp(argv[1], "gen-lines")) return gen_lines(atol(argv[2]), strtoul(argv[3], 0, 10));
  if (argc >= 5 && !strcmp(argv[1], "sink")) return sink(atol(argv[2]), atol(argv[3]), argv[4]);
  if (argc >= 3 && !strcmp(argv[1], "keys")) return keys(atoi(argv[2]));
  fprintf(stderr, "usage: apptools gen-wav S | gen-y4m W H FPS N | gen-lines N SEED | sink RATE RING NAME | keys SECONDS\n");
  return 2;
}
