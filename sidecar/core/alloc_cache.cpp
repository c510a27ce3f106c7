// The per-thread block cache (core/alloc_cache.h), and the operator new and delete that use it.
//
// Each worker thread keeps a free list per 16-byte class of blocks up to 1 KiB; other threads
// (the main one, the access log's and the tracer's writers, the ZooKeeper client's) use malloc
// and free as they are: they would mostly collect what workers made, and keep it. A block is an
// ordinary malloc block of its class's size, so it can be freed by any thread, reallocated, or
// handed to free() by code that never heard of the cache; a block freed on another worker than
// the one that made it joins that worker's cache. At most kMaxCachedBytes stay cached per
// thread: past that, blocks go back to malloc, so a burst leaves at most that much behind. At
// thread exit the cache is freed, and blocks released afterwards (other thread_local
// destructors) go to free().
#include "core/alloc_cache.h"

#include <malloc.h>
#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SIDECAR_NO_ALLOC_CACHE 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define SIDECAR_NO_ALLOC_CACHE 1
#endif
#endif

namespace sidecar::alloc {

#ifndef SIDECAR_NO_ALLOC_CACHE

namespace {

constexpr std::size_t kGranule = 16;
constexpr std::size_t kClasses = kMaxBlock / kGranule;

struct Block {
  Block* next;
};

// Zero-initialised and trivially destructible: a thread's first use costs no guard.
struct Cache {
  Block* head[kClasses + 1];
  std::size_t bytes;  // what the cached blocks take of the heap, glibc's headers included
  enum State : unsigned char { off, on, exiting };  // exiting: the cache is gone, free() at once
  State state;
  bool flushRegistered;
};
thread_local Cache tCache;

// What a block of class cls takes of the heap: glibc's chunk (its 8-byte header, rounded to 16).
constexpr std::size_t footprint(std::size_t cls) { return cls * kGranule + kGranule; }

void freeAll(Cache& c) noexcept {
  for (auto*& head : c.head) {
    while (Block* b = head) {
      head = b->next;
      std::free(b);
    }
  }
  c.bytes = 0;
}

struct Flusher {
  ~Flusher() {
    freeAll(tCache);
    tCache.state = Cache::exiting;
  }
};
thread_local Flusher tFlusher;

// Keeps b (of class cls) when the thread's bound allows.
inline bool keep(void* p, std::size_t cls) noexcept {
  Cache& c = tCache;
  const std::size_t size = footprint(cls);
  if (c.bytes + size > kMaxCachedBytes || c.state != Cache::on) {
    return false;
  }
  if (!c.flushRegistered) [[unlikely]] {
    c.flushRegistered = true;
    Flusher* volatile registered = &tFlusher;  // constructs it: its destructor runs at exit
    (void)registered;
  }
  auto* b = static_cast<Block*>(p);
  b->next = c.head[cls];
  c.head[cls] = b;
  c.bytes += size;
  return true;
}

}  // namespace

void* allocate(std::size_t n) noexcept {
  if (n - 1 < kMaxBlock) {  // 1..kMaxBlock (0 wraps around)
    const std::size_t cls = (n + kGranule - 1) / kGranule;
    Cache& c = tCache;
    if (Block* b = c.head[cls]) {  // none on a thread without the cache
      c.head[cls] = b->next;
      c.bytes -= footprint(cls);
      return b;
    }
    n = cls * kGranule;
  }
  return std::malloc(n ? n : 1);
}

void release(void* p, std::size_t n) noexcept {
  if (p && n - 1 < kMaxBlock && keep(p, (n + kGranule - 1) / kGranule)) {
    return;
  }
  std::free(p);
}

void release(void* p) noexcept {
  if (!p) {
    return;
  }
  // A block made for class c has a usable size in [16c, 16c + 16): it goes back to class c.
  const std::size_t cls = malloc_usable_size(p) / kGranule;
  if (cls - 1 < kClasses && keep(p, cls)) {
    return;
  }
  std::free(p);
}

std::size_t cachedBytes() noexcept { return tCache.bytes; }

void flush() noexcept { freeAll(tCache); }

void useOnThisThread() noexcept {
  if (tCache.state == Cache::off) {
    tCache.state = Cache::on;
  }
}

namespace {
void* ngMalloc(std::size_t n, void*) { return allocate(n); }
void ngFree(void* p, void*) { release(p); }
void* ngCalloc(std::size_t count, std::size_t size, void*) {
  if (size && count > SIZE_MAX / size) {
    return nullptr;
  }
  void* p = allocate(count * size);
  if (p) {
    std::memset(p, 0, count * size);
  }
  return p;
}
void* ngRealloc(void* p, std::size_t n, void*) {
  return p ? std::realloc(p, n) : allocate(n);  // every block is a malloc block
}
nghttp2_mem gNghttp2Mem{nullptr, ngMalloc, ngFree, ngCalloc, ngRealloc};
}  // namespace

nghttp2_mem* nghttp2Mem() noexcept { return &gNghttp2Mem; }

#else  // sanitized: malloc and free as they are

void* allocate(std::size_t n) noexcept { return std::malloc(n ? n : 1); }
void release(void* p, std::size_t) noexcept { std::free(p); }
void release(void* p) noexcept { std::free(p); }
std::size_t cachedBytes() noexcept { return 0; }
void flush() noexcept {}
void useOnThisThread() noexcept {}
nghttp2_mem* nghttp2Mem() noexcept { return nullptr; }

#endif

}  // namespace sidecar::alloc

#ifndef SIDECAR_NO_ALLOC_CACHE

// The replaceable allocation functions (the aligned ones stay libstdc++'s: nothing on the data
// path asks for more than 16-byte alignment).
namespace {
void* newOrThrow(std::size_t n) {
  for (;;) {
    if (void* p = sidecar::alloc::allocate(n)) {
      return p;
    }
    std::new_handler handler = std::get_new_handler();
    if (!handler) {
      throw std::bad_alloc();
    }
    handler();
  }
}
}  // namespace

void* operator new(std::size_t n) { return newOrThrow(n); }
void* operator new[](std::size_t n) { return newOrThrow(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return newOrThrow(n);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return newOrThrow(n);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept { sidecar::alloc::release(p); }
void operator delete[](void* p) noexcept { sidecar::alloc::release(p); }
void operator delete(void* p, std::size_t n) noexcept { sidecar::alloc::release(p, n); }
void operator delete[](void* p, std::size_t n) noexcept { sidecar::alloc::release(p, n); }
void operator delete(void* p, const std::nothrow_t&) noexcept { sidecar::alloc::release(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { sidecar::alloc::release(p); }

#endif
