/*
 * Page digests at memory speed: XXH64 (seed 0) over every page of a buffer in
 * one call, optionally comparing with the previous digests and listing the
 * pages that changed. One N-API call per megabytes of pages instead of one
 * WebAssembly call (and copy) per 4 KiB page.
 *
 * XXH64 follows the reference specification (github.com/Cyan4973/xxHash,
 * doc/xxhash_spec.md); the test suite checks it against xxhash-wasm.
 */
#define _GNU_SOURCE /* SEEK_DATA, SEEK_HOLE */
#include <node_api.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include <pthread.h>
#include <sys/mman.h>
#include <errno.h>
#include <stdio.h>
#include <unistd.h>
#include <signal.h>
#include <setjmp.h>
#include <zlib.h>

/*
 * A mapped image that shrinks under us (another process truncates it) turns
 * the next read of a page past its new end into SIGBUS, which kills the
 * process: JavaScript cannot catch it. Every read of caller memory here (it
 * may be such a mapping) runs guarded: our SIGBUS handler jumps back to the
 * guard of the faulting thread, and the call fails with PRESYNC_ERR_IMAGE_SIZE
 * instead. A SIGBUS outside a guard gets the previous handler (or the
 * default: the process dies, as before).
 */
static __thread sigjmp_buf *volatile bus_jmp __attribute__((tls_model("initial-exec")));
/* volatile and a compiler barrier: without them the store that arms the guard
 * is dead to the optimizer (overwritten after a loop that never reads it) and
 * the reads of the mapping could move outside the guarded stretch. */
#define GUARD_ON(jb) do { bus_jmp = &(jb); __asm__ volatile("" ::: "memory"); } while (0)
#define GUARD_OFF() do { __asm__ volatile("" ::: "memory"); bus_jmp = NULL; } while (0)
static struct sigaction prev_bus;

static void on_bus(int sig, siginfo_t *si, void *uc) {
  sigjmp_buf *j = bus_jmp;
  if (j) { bus_jmp = NULL; siglongjmp(*j, 1); }
  if ((prev_bus.sa_flags & SA_SIGINFO) && prev_bus.sa_sigaction) { prev_bus.sa_sigaction(sig, si, uc); return; }
  if (!(prev_bus.sa_flags & SA_SIGINFO) && prev_bus.sa_handler != SIG_DFL && prev_bus.sa_handler != SIG_IGN) { prev_bus.sa_handler(sig); return; }
  /* Not ours: back to the default action; the faulting access repeats and ends the process. */
  signal(SIGBUS, SIG_DFL);
}

static void install_bus_guard(void) {
  static int done = 0;
  if (done) return;
  done = 1;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_bus;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, &prev_bus);
}

static const char *SHRANK = "the image shrank under presync (a read past its end)";

static const uint64_t P1 = 0x9E3779B185EBCA87ULL;
static const uint64_t P2 = 0xC2B2AE3D27D4EB4FULL;
static const uint64_t P3 = 0x165667B19E3779F9ULL;
static const uint64_t P4 = 0x85EBCA77C2B2AE63ULL;
static const uint64_t P5 = 0x27D4EB2F165667C5ULL;

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
static inline uint64_t read64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static inline uint32_t read32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint64_t round64(uint64_t acc, uint64_t input) {
  acc += input * P2;
  acc = rotl64(acc, 31);
  return acc * P1;
}
static inline uint64_t merge64(uint64_t acc, uint64_t val) {
  acc ^= round64(0, val);
  return acc * P1 + P4;
}

static uint64_t xxh64(const uint8_t *p, size_t len) {
  const uint8_t *end = p + len;
  uint64_t h;
  if (len >= 32) {
    const uint8_t *limit = end - 32;
    uint64_t v1 = P1 + P2, v2 = P2, v3 = 0, v4 = 0 - P1;
    do {
      v1 = round64(v1, read64(p)); p += 8;
      v2 = round64(v2, read64(p)); p += 8;
      v3 = round64(v3, read64(p)); p += 8;
      v4 = round64(v4, read64(p)); p += 8;
    } while (p <= limit);
    h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
    h = merge64(h, v1); h = merge64(h, v2); h = merge64(h, v3); h = merge64(h, v4);
  } else {
    h = P5;
  }
  h += (uint64_t)len;
  while (p + 8 <= end) { h ^= round64(0, read64(p)); h = rotl64(h, 27) * P1 + P4; p += 8; }
  if (p + 4 <= end) { h ^= (uint64_t)read32(p) * P1; h = rotl64(h, 23) * P2 + P3; p += 4; }
  while (p < end) { h ^= (*p) * P5; h = rotl64(h, 11) * P1; p++; }
  h ^= h >> 33; h *= P2; h ^= h >> 29; h *= P3; h ^= h >> 32;
  return h;
}


/*
 * Guests hold many zero pages (never touched, or freed and zeroed). Checking
 * for zero exits at the first non-zero word of a data page, so it costs almost
 * nothing there, and saves the hash on a zero page (a read at memory speed).
 */
static int is_zero(const uint8_t *p, size_t len) {
  size_t i = 0;
  for (; i + 64 <= len; i += 64) {
    uint64_t a = read64(p + i) | read64(p + i + 8) | read64(p + i + 16) | read64(p + i + 24) |
                 read64(p + i + 32) | read64(p + i + 40) | read64(p + i + 48) | read64(p + i + 56);
    if (a) return 0;
  }
  for (; i < len; i++) if (p[i]) return 0;
  return 1;
}

/* XXH64 of a page, with the zero-page digest cached per page size (thread-safe: computed before threads start). */
typedef struct { size_t size; uint64_t digest; } zero_cache;
static inline uint64_t page_digest(const uint8_t *p, size_t len, const zero_cache *z) {
  if (z->size == len && is_zero(p, len)) return z->digest;
  return xxh64(p, len);
}
static zero_cache zero_for(size_t len) {
  static zero_cache last = { 0, 0 };
  if (last.size != len) {
    uint8_t tmp[256];
    /* Hash of len zero bytes, without allocating len bytes: feed XXH64 from a zero block. */
    zero_cache z = { len, 0 };
    if (len <= sizeof tmp) { memset(tmp, 0, len); z.digest = xxh64(tmp, len); }
    else { uint8_t *buf = calloc(1, len); if (!buf) { z.size = 0; return z; } z.digest = xxh64(buf, len); free(buf); }
    last = z;
  }
  return last;
}

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, "PRESYNC_ERR_INTERNAL", "pagehash: N-API call failed"); return NULL; } } while (0)

static int typed(napi_env env, napi_value v, napi_typedarray_type want, void **data, size_t *length) {
  bool is;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return 0;
  napi_typedarray_type t; size_t len; napi_value ab; size_t off;
  if (napi_get_typedarray_info(env, v, &t, &len, data, &ab, &off) != napi_ok) return 0;
  if (t != want) return 0;
  *length = len;
  return 1;
}

/* hashPages(src: Uint8Array, pageSize, out: BigUint64Array, outOffset) */
static napi_value hash_pages(napi_env env, napi_callback_info info) {
  size_t argc = 4; napi_value a[4];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  void *src, *out; size_t srcLen, outLen; uint32_t pageSize, outOffset;
  if (argc < 4 || !typed(env, a[0], napi_uint8_array, &src, &srcLen) || !typed(env, a[2], napi_biguint64_array, &out, &outLen) ||
      napi_get_value_uint32(env, a[1], &pageSize) != napi_ok || napi_get_value_uint32(env, a[3], &outOffset) != napi_ok || pageSize == 0) {
    napi_throw_type_error(env, "PRESYNC_ERR_BAD_ARGUMENT", "hashPages(src: Uint8Array, pageSize: number, out: BigUint64Array, outOffset: number)");
    return NULL;
  }
  size_t pages = srcLen / pageSize;
  if (outOffset > outLen || pages > outLen - outOffset) { napi_throw_range_error(env, "PRESYNC_ERR_BAD_ARGUMENT", "hashPages: output too small"); return NULL; }
  uint64_t *o = (uint64_t *)out + outOffset;
  zero_cache z = zero_for(pageSize);
  sigjmp_buf jb;
  if (sigsetjmp(jb, 0)) { bus_jmp = NULL; napi_throw_error(env, "PRESYNC_ERR_IMAGE_SIZE", SHRANK); return NULL; }
  GUARD_ON(jb);
  for (size_t i = 0; i < pages; i++) o[i] = page_digest((const uint8_t *)src + i * pageSize, pageSize, &z);
  GUARD_OFF();
  napi_value r; CHECK(napi_create_uint32(env, (uint32_t)pages, &r));
  return r;
}

typedef struct {
  const uint8_t *src; size_t pageSize; uint64_t *d; uint32_t *out; uint32_t first; size_t from, to; int all; zero_cache z; uint32_t found; int faulted;
} cmp_job;

static void *cmp_run(void *arg) {
  cmp_job *j = (cmp_job *)arg;
  sigjmp_buf jb;
  if (sigsetjmp(jb, 0)) { bus_jmp = NULL; j->faulted = 1; j->found = 0; return NULL; }
  GUARD_ON(jb);
  uint32_t k = 0;
  for (size_t i = j->from; i < j->to; i++) {
    uint64_t h = page_digest(j->src + i * j->pageSize, j->pageSize, &j->z);
    if (j->all || h != j->d[i]) { j->d[i] = h; j->out[k++] = j->first + (uint32_t)i; }
  }
  GUARD_OFF();
  j->found = k;
  return NULL;
}

#define MAX_THREADS 8

/*
 * hashCompare(src: Uint8Array, pageSize, digests: BigUint64Array, firstPage, all: boolean, dirty: Uint32Array, dirtyOffset, threads?)
 * Hashes the pages of src (pages firstPage..), stores digests, and writes the
 * indices of pages whose digest changed (every page when `all`) into dirty,
 * in ascending order. Returns the new dirtyOffset. With threads > 1 the pages
 * are split in contiguous slices hashed in parallel (each slice lists its
 * pages in its own part of `dirty`, compacted afterwards).
 */
static napi_value hash_compare(napi_env env, napi_callback_info info) {
  size_t argc = 8; napi_value a[8];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  void *src, *dig, *dirty; size_t srcLen, digLen, dirtyLen; uint32_t pageSize, first, dOff, threads = 1; bool all;
  if (argc < 7 || !typed(env, a[0], napi_uint8_array, &src, &srcLen) || !typed(env, a[2], napi_biguint64_array, &dig, &digLen) ||
      !typed(env, a[5], napi_uint32_array, &dirty, &dirtyLen) || napi_get_value_uint32(env, a[1], &pageSize) != napi_ok ||
      napi_get_value_uint32(env, a[3], &first) != napi_ok || napi_get_value_bool(env, a[4], &all) != napi_ok ||
      napi_get_value_uint32(env, a[6], &dOff) != napi_ok || pageSize == 0 ||
      (argc >= 8 && napi_get_value_uint32(env, a[7], &threads) != napi_ok)) {
    napi_throw_type_error(env, "PRESYNC_ERR_BAD_ARGUMENT", "hashCompare(src, pageSize, digests, firstPage, all, dirty, dirtyOffset, threads?)");
    return NULL;
  }
  size_t pages = srcLen / pageSize;
  if (first > digLen || pages > digLen - first || dOff > dirtyLen || pages > dirtyLen - dOff) {
    napi_throw_range_error(env, "PRESYNC_ERR_BAD_ARGUMENT", "hashCompare: pages beyond the digest table or dirty list");
    return NULL;
  }
  if (threads < 1) threads = 1;
  if (threads > MAX_THREADS) threads = MAX_THREADS;
  /* A thread per few pages costs more than it saves. */
  if (pages < (size_t)threads * 1024) threads = 1;
  zero_cache z = zero_for(pageSize);
  cmp_job jobs[MAX_THREADS];
  pthread_t tids[MAX_THREADS];
  int started[MAX_THREADS] = { 0 };
  for (uint32_t t = 0; t < threads; t++) {
    size_t from = pages * t / threads, to = pages * (t + 1) / threads;
    jobs[t] = (cmp_job){ (const uint8_t *)src, pageSize, (uint64_t *)dig + first, (uint32_t *)dirty + dOff + from, first, from, to, all, z, 0, 0 };
    /* The calling thread takes slice 0; a failed spawn runs its slice here too. */
    if (t > 0 && pthread_create(&tids[t], NULL, cmp_run, &jobs[t]) == 0) started[t] = 1;
  }
  cmp_run(&jobs[0]);
  for (uint32_t t = 1; t < threads; t++) {
    if (started[t]) pthread_join(tids[t], NULL);
    else cmp_run(&jobs[t]);
  }
  for (uint32_t t = 0; t < threads; t++) {
    if (jobs[t].faulted) { napi_throw_error(env, "PRESYNC_ERR_IMAGE_SIZE", SHRANK); return NULL; }
  }
  uint32_t *out = (uint32_t *)dirty;
  uint32_t k = dOff + jobs[0].found;
  for (uint32_t t = 1; t < threads; t++) {
    if (jobs[t].found) memmove(out + k, jobs[t].out, jobs[t].found * sizeof(uint32_t));
    k += jobs[t].found;
  }
  napi_value r; CHECK(napi_create_uint32(env, k, &r));
  return r;
}

/*
 * hashResident(src: Uint8Array, pageSize, digests: BigUint64Array, firstPage, threads?): number
 * Digests of the pages of src (a view of a shared file mapping, starting on a
 * 4 KiB boundary) into digests[firstPage..], reading only pages that are in
 * the page cache (mincore): a page of a tmpfs file that is not is a hole and
 * gets the zero-page digest without being touched. Reading a hole through
 * the mapping would allocate it, and on a full tmpfs raise SIGBUS. One call
 * for the whole image, however fragmented its holes are (SEEK_DATA/SEEK_HOLE
 * costs ~10 us per extent). Returns the number of resident pages, or throws
 * when the page size is not a multiple of 4 KiB.
 */
typedef struct { const uint8_t *src; const unsigned char *vec; size_t pageSize, per; uint64_t *d; size_t from, to; zero_cache z; uint32_t resident; int faulted; } res_job;

static void *res_run(void *arg) {
  res_job *j = (res_job *)arg;
  sigjmp_buf jb;
  if (sigsetjmp(jb, 0)) { bus_jmp = NULL; j->faulted = 1; j->resident = 0; return NULL; }
  GUARD_ON(jb);
  uint32_t k = 0;
  for (size_t i = j->from; i < j->to; i++) {
    int in = 0;
    for (size_t s = 0; s < j->per; s++) if (j->vec[i * j->per + s] & 1) { in = 1; break; }
    if (!in) { j->d[i] = j->z.digest; continue; }
    j->d[i] = page_digest(j->src + i * j->pageSize, j->pageSize, &j->z);
    k++;
  }
  GUARD_OFF();
  j->resident = k;
  return NULL;
}

static napi_value hash_resident(napi_env env, napi_callback_info info) {
  size_t argc = 5; napi_value a[5];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  void *src, *dig; size_t srcLen, digLen; uint32_t pageSize, first, threads = 1;
  if (argc < 4 || !typed(env, a[0], napi_uint8_array, &src, &srcLen) || !typed(env, a[2], napi_biguint64_array, &dig, &digLen) ||
      napi_get_value_uint32(env, a[1], &pageSize) != napi_ok || napi_get_value_uint32(env, a[3], &first) != napi_ok ||
      (argc >= 5 && napi_get_value_uint32(env, a[4], &threads) != napi_ok)) {
    napi_throw_type_error(env, "PRESYNC_ERR_BAD_ARGUMENT", "hashResident(src, pageSize, digests, firstPage, threads?)");
    return NULL;
  }
  if (pageSize == 0 || pageSize % 4096 != 0 || ((uintptr_t)src & 4095) != 0) {
    napi_throw_range_error(env, "PRESYNC_ERR_BAD_ARGUMENT", "hashResident: pages must be multiples of 4 KiB, starting on a 4 KiB boundary");
    return NULL;
  }
  size_t pages = srcLen / pageSize;
  if (first > digLen || pages > digLen - first) {
    napi_throw_range_error(env, "PRESYNC_ERR_BAD_ARGUMENT", "hashResident: pages beyond the digest table");
    return NULL;
  }
  size_t per = pageSize / 4096;
  unsigned char *vec = malloc(pages * per + 1);
  if (!vec) { napi_throw_error(env, "PRESYNC_ERR_INTERNAL", "hashResident: out of memory"); return NULL; }
  if (pages > 0 && mincore(src, pages * pageSize, vec) != 0) {
    char msg[128];
    snprintf(msg, sizeof msg, "hashResident: mincore failed: %s", strerror(errno));
    free(vec);
    napi_throw_error(env, "PRESYNC_ERR_IMAGE", msg);
    return NULL;
  }
  if (threads < 1) threads = 1;
  if (threads > MAX_THREADS) threads = MAX_THREADS;
  if (pages < (size_t)threads * 1024) threads = 1;
  zero_cache z = zero_for(pageSize);
  res_job jobs[MAX_THREADS];
  pthread_t tids[MAX_THREADS];
  int started[MAX_THREADS] = { 0 };
  for (uint32_t t = 0; t < threads; t++) {
    jobs[t] = (res_job){ (const uint8_t *)src, vec, pageSize, per, (uint64_t *)dig + first, pages * t / threads, pages * (t + 1) / threads, z, 0, 0 };
    if (t > 0 && pthread_create(&tids[t], NULL, res_run, &jobs[t]) == 0) started[t] = 1;
  }
  res_run(&jobs[0]);
  uint32_t total = jobs[0].resident;
  for (uint32_t t = 1; t < threads; t++) {
    if (started[t]) pthread_join(tids[t], NULL);
    else res_run(&jobs[t]);
    total += jobs[t].resident;
  }
  free(vec);
  for (uint32_t t = 0; t < threads; t++) {
    if (jobs[t].faulted) { napi_throw_error(env, "PRESYNC_ERR_IMAGE_SIZE", SHRANK); return NULL; }
  }
  napi_value r; CHECK(napi_create_uint32(env, total, &r));
  return r;
}

/* hashCompareAsync: the same comparison on a libuv worker thread, so the
 * event loop (sending pages, reading acks) runs meanwhile. */
typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref refs[3];
  cmp_job job;
  uint32_t dOff;
} async_cmp;

static void acmp_exec(napi_env env, void *data) {
  (void)env;
  cmp_run(&((async_cmp *)data)->job);
}

static void acmp_done(napi_env env, napi_status status, void *data) {
  async_cmp *a = (async_cmp *)data;
  napi_value r;
  if (status == napi_ok && !a->job.faulted && napi_create_uint32(env, a->dOff + a->job.found, &r) == napi_ok) napi_resolve_deferred(env, a->deferred, r);
  else {
    napi_value msg, code, err;
    napi_create_string_utf8(env, a->job.faulted ? SHRANK : "hashCompareAsync failed", NAPI_AUTO_LENGTH, &msg);
    napi_create_string_utf8(env, a->job.faulted ? "PRESYNC_ERR_IMAGE_SIZE" : "PRESYNC_ERR_INTERNAL", NAPI_AUTO_LENGTH, &code);
    napi_create_error(env, code, msg, &err);
    napi_reject_deferred(env, a->deferred, err);
  }
  for (int i = 0; i < 3; i++) napi_delete_reference(env, a->refs[i]);
  napi_delete_async_work(env, a->work);
  free(a);
}

/* hashCompareAsync(src, pageSize, digests, firstPage, all, dirty, dirtyOffset): Promise<number> */
static napi_value hash_compare_async(napi_env env, napi_callback_info info) {
  size_t argc = 7; napi_value a[7];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  void *src, *dig, *dirty; size_t srcLen, digLen, dirtyLen; uint32_t pageSize, first, dOff; bool all;
  if (argc < 7 || !typed(env, a[0], napi_uint8_array, &src, &srcLen) || !typed(env, a[2], napi_biguint64_array, &dig, &digLen) ||
      !typed(env, a[5], napi_uint32_array, &dirty, &dirtyLen) || napi_get_value_uint32(env, a[1], &pageSize) != napi_ok ||
      napi_get_value_uint32(env, a[3], &first) != napi_ok || napi_get_value_bool(env, a[4], &all) != napi_ok ||
      napi_get_value_uint32(env, a[6], &dOff) != napi_ok || pageSize == 0) {
    napi_throw_type_error(env, "PRESYNC_ERR_BAD_ARGUMENT", "hashCompareAsync(src, pageSize, digests, firstPage, all, dirty, dirtyOffset)");
    return NULL;
  }
  size_t pages = srcLen / pageSize;
  if (first > digLen || pages > digLen - first || dOff > dirtyLen || pages > dirtyLen - dOff) {
    napi_throw_range_error(env, "PRESYNC_ERR_BAD_ARGUMENT", "hashCompareAsync: pages beyond the digest table or dirty list");
    return NULL;
  }
  async_cmp *w = calloc(1, sizeof *w);
  if (!w) { napi_throw_error(env, "PRESYNC_ERR_INTERNAL", "hashCompareAsync: out of memory"); return NULL; }
  w->job = (cmp_job){ (const uint8_t *)src, pageSize, (uint64_t *)dig + first, (uint32_t *)dirty + dOff, first, 0, pages, all, zero_for(pageSize), 0, 0 };
  w->dOff = dOff;
  napi_value promise, name;
  /* The arrays stay alive (and mapped) until the worker is done with them. */
  if (napi_create_reference(env, a[0], 1, &w->refs[0]) != napi_ok || napi_create_reference(env, a[2], 1, &w->refs[1]) != napi_ok ||
      napi_create_reference(env, a[5], 1, &w->refs[2]) != napi_ok || napi_create_promise(env, &w->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, "presync:hashCompare", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, acmp_exec, acmp_done, w, &w->work) != napi_ok || napi_queue_async_work(env, w->work) != napi_ok) {
    napi_throw_error(env, "PRESYNC_ERR_INTERNAL", "hashCompareAsync: cannot queue the work");
    return NULL;
  }
  return promise;
}

/*
 * dataExtents(fd, offset, length): number[]  — [start, end, start, end, ...]
 * The parts of [offset, offset+length) of the file that hold data, relative
 * to offset (SEEK_DATA/SEEK_HOLE). Reading a hole of a tmpfs file through a
 * mapping allocates a page for it (and raises SIGBUS when tmpfs is full), so
 * scans read only data and take holes as zero pages. A file system without
 * SEEK_DATA reports everything as data.
 */
static napi_value data_extents(napi_env env, napi_callback_info info) {
  size_t argc = 3; napi_value a[3];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  int32_t fd; int64_t off, len;
  if (argc < 3 || napi_get_value_int32(env, a[0], &fd) != napi_ok || napi_get_value_int64(env, a[1], &off) != napi_ok ||
      napi_get_value_int64(env, a[2], &len) != napi_ok || fd < 0 || off < 0 || len < 0) {
    napi_throw_type_error(env, "PRESYNC_ERR_BAD_ARGUMENT", "dataExtents(fd, offset, length)");
    return NULL;
  }
  napi_value arr; CHECK(napi_create_array(env, &arr));
  uint32_t k = 0;
  int64_t end = off + len, pos = off;
  while (pos < end) {
    off_t d = lseek(fd, (off_t)pos, SEEK_DATA);
    if (d < 0) {
      if (errno == ENXIO) break; /* only a hole up to the end of the file */
      /* No SEEK_DATA here: all of it is data. */
      napi_value s0, e0; CHECK(napi_create_double(env, (double)(pos - off), &s0)); CHECK(napi_create_double(env, (double)len, &e0));
      CHECK(napi_set_element(env, arr, k++, s0)); CHECK(napi_set_element(env, arr, k++, e0));
      break;
    }
    if (d >= end) break;
    off_t h = lseek(fd, d, SEEK_HOLE);
    if (h < 0 || h > end) h = end;
    napi_value s0, e0; CHECK(napi_create_double(env, (double)(d - off), &s0)); CHECK(napi_create_double(env, (double)(h - off), &e0));
    CHECK(napi_set_element(env, arr, k++, s0)); CHECK(napi_set_element(env, arr, k++, e0));
    pos = h;
  }
  return arr;
}

static void unmap_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  munmap(data, (size_t)(uintptr_t)hint);
}

/*
 * mapFile(fd, offset, length): ArrayBuffer
 * A read-only shared mapping of part of a file: scans read the guest's RAM in
 * place instead of copying it out with pread (which costs more than the hash).
 * Unmapped when the ArrayBuffer is collected. The file must not shrink while
 * mapped (a guest RAM file never does).
 */
static napi_value map_file(napi_env env, napi_callback_info info) {
  size_t argc = 3; napi_value a[3];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  int32_t fd; int64_t off, len;
  if (argc < 3 || napi_get_value_int32(env, a[0], &fd) != napi_ok || napi_get_value_int64(env, a[1], &off) != napi_ok ||
      napi_get_value_int64(env, a[2], &len) != napi_ok || fd < 0 || off < 0 || len <= 0 || (off & 4095) != 0) {
    napi_throw_type_error(env, "PRESYNC_ERR_BAD_ARGUMENT", "mapFile(fd, offset (4 KiB aligned), length > 0)");
    return NULL;
  }
  void *m = mmap(NULL, (size_t)len, PROT_READ, MAP_SHARED, fd, (off_t)off);
  if (m == MAP_FAILED) {
    char msg[128];
    snprintf(msg, sizeof msg, "mapFile: mmap failed: %s", strerror(errno));
    napi_throw_error(env, "PRESYNC_ERR_IMAGE", msg);
    return NULL;
  }
  napi_value ab;
  if (napi_create_external_arraybuffer(env, m, (size_t)len, unmap_finalize, (void *)(uintptr_t)len, &ab) != napi_ok) {
    munmap(m, (size_t)len);
    napi_throw_error(env, "PRESYNC_ERR_INTERNAL", "mapFile: cannot wrap the mapping");
    return NULL;
  }
  return ab;
}

/*
 * packPages(src: Uint8Array, pageSize, srcPos: Uint32Array, indices: Uint32Array, count, dst: Uint8Array, dstOffset, digests: BigUint64Array): number
 * Lays out the records of a PAGES frame (wire format, little-endian: u32
 * index, u64 digest, u8 encoding, u32 length, then the payload) for `count`
 * pages of src (page srcPos[i] of src goes out as page indices[i]). A zero
 * page becomes a bare ZERO record; any other is copied into the frame and
 * hashed from that copy, so the digest is of exactly the bytes sent even if
 * the guest writes src meanwhile. One pass over the data instead of a copy,
 * a hash and a second copy. Returns the new dstOffset.
 */
static napi_value pack_pages(napi_env env, napi_callback_info info) {
  size_t argc = 9; napi_value a[9];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  void *src, *pos, *idx, *dst, *dig; size_t srcLen, posLen, idxLen, dstLen, digLen; uint32_t pageSize, count, dOff;
  if (argc < 8 || !typed(env, a[0], napi_uint8_array, &src, &srcLen) || napi_get_value_uint32(env, a[1], &pageSize) != napi_ok ||
      !typed(env, a[2], napi_uint32_array, &pos, &posLen) || !typed(env, a[3], napi_uint32_array, &idx, &idxLen) ||
      napi_get_value_uint32(env, a[4], &count) != napi_ok || !typed(env, a[5], napi_uint8_array, &dst, &dstLen) ||
      napi_get_value_uint32(env, a[6], &dOff) != napi_ok || !typed(env, a[7], napi_biguint64_array, &dig, &digLen) || pageSize == 0) {
    napi_throw_type_error(env, "PRESYNC_ERR_BAD_ARGUMENT", "packPages(src, pageSize, srcPos, indices, count, dst, dstOffset, digests)");
    return NULL;
  }
  if (count > posLen || count > idxLen || count > digLen) { napi_throw_range_error(env, "PRESYNC_ERR_BAD_ARGUMENT", "packPages: count beyond srcPos, indices or digests"); return NULL; }
  /* Optional crc: Uint32Array [CRC-32 so far] in, [CRC-32 including these records] out; computed while the bytes are in cache. */
  uint32_t *crcIo = NULL;
  if (argc >= 9) {
    void *c; size_t cLen; napi_valuetype t;
    if (napi_typeof(env, a[8], &t) != napi_ok) { napi_throw_type_error(env, "PRESYNC_ERR_BAD_ARGUMENT", "packPages: bad crc"); return NULL; }
    if (t != napi_undefined) {
      if (!typed(env, a[8], napi_uint32_array, &c, &cLen) || cLen < 1) { napi_throw_type_error(env, "PRESYNC_ERR_BAD_ARGUMENT", "packPages: crc must be a Uint32Array of length 1"); return NULL; }
      crcIo = (uint32_t *)c;
    }
  }
  uLong crc = crcIo ? crcIo[0] : 0;
  const uint32_t *sp = (const uint32_t *)pos;
  size_t need = dOff;
  for (uint32_t i = 0; i < count; i++) {
    if ((size_t)sp[i] >= srcLen / pageSize) { napi_throw_range_error(env, "PRESYNC_ERR_BAD_ARGUMENT", "packPages: source page beyond src"); return NULL; }
    need += 17 + (size_t)pageSize;
  }
  if (need > dstLen) { napi_throw_range_error(env, "PRESYNC_ERR_BAD_ARGUMENT", "packPages: frame buffer too small"); return NULL; }
  zero_cache z = zero_for(pageSize);
  uint8_t *d = (uint8_t *)dst + dOff;
  uint64_t *o = (uint64_t *)dig;
  const uint32_t *ix = (const uint32_t *)idx;
  sigjmp_buf jb;
  if (sigsetjmp(jb, 0)) { bus_jmp = NULL; napi_throw_error(env, "PRESYNC_ERR_IMAGE_SIZE", SHRANK); return NULL; }
  GUARD_ON(jb);
  for (uint32_t i = 0; i < count; i++) {
    const uint8_t *p = (const uint8_t *)src + (size_t)sp[i] * pageSize;
    uint8_t enc; uint32_t len; uint64_t h;
    if (is_zero(p, pageSize)) { enc = 0; len = 0; h = z.digest; }
    else { memcpy(d + 17, p, pageSize); h = xxh64(d + 17, pageSize); enc = 1; len = pageSize; }
    memcpy(d, &ix[i], 4); memcpy(d + 4, &h, 8); d[12] = enc; memcpy(d + 13, &len, 4);
    o[i] = h;
    if (crcIo) crc = crc32(crc, d, 17 + len);
    d += 17 + len;
  }
  GUARD_OFF();
  if (crcIo) crcIo[0] = (uint32_t)crc;
  napi_value r; CHECK(napi_create_uint32(env, (uint32_t)(d - (uint8_t *)dst), &r));
  return r;
}

/* copy(src: Uint8Array, dst: Uint8Array): copies src into dst (from 0), guarded like every read of a mapping. */
static napi_value copy_guarded(napi_env env, napi_callback_info info) {
  size_t argc = 2; napi_value a[2];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  void *src, *dst; size_t srcLen, dstLen;
  if (argc < 2 || !typed(env, a[0], napi_uint8_array, &src, &srcLen) || !typed(env, a[1], napi_uint8_array, &dst, &dstLen)) {
    napi_throw_type_error(env, "PRESYNC_ERR_BAD_ARGUMENT", "copy(src: Uint8Array, dst: Uint8Array)");
    return NULL;
  }
  if (srcLen > dstLen) { napi_throw_range_error(env, "PRESYNC_ERR_BAD_ARGUMENT", "copy: destination too small"); return NULL; }
  sigjmp_buf jb;
  if (sigsetjmp(jb, 0)) { bus_jmp = NULL; napi_throw_error(env, "PRESYNC_ERR_IMAGE_SIZE", SHRANK); return NULL; }
  GUARD_ON(jb);
  memcpy(dst, src, srcLen);
  GUARD_OFF();
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  install_bus_guard();
  napi_property_descriptor props[] = {
    { "hashPages", NULL, hash_pages, NULL, NULL, NULL, napi_default, NULL },
    { "hashCompare", NULL, hash_compare, NULL, NULL, NULL, napi_default, NULL },
    { "hashResident", NULL, hash_resident, NULL, NULL, NULL, napi_default, NULL },
    { "mapFile", NULL, map_file, NULL, NULL, NULL, napi_default, NULL },
    { "hashCompareAsync", NULL, hash_compare_async, NULL, NULL, NULL, napi_default, NULL },
    { "dataExtents", NULL, data_extents, NULL, NULL, NULL, napi_default, NULL },
    { "copy", NULL, copy_guarded, NULL, NULL, NULL, napi_default, NULL },
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* Writes wire fields with memcpy: only offered where that is little-endian. */
    { "packPages", NULL, pack_pages, NULL, NULL, NULL, napi_default, NULL },
#endif
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
