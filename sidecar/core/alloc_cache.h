#pragma once
// A per-thread cache of small blocks in front of malloc (core/alloc_cache.cpp): each request
// through the sidecar makes and drops some forty small objects (fields, coroutine frames, asio's
// operations, nghttp2's streams and frames), and with hundreds of requests in flight on a worker
// glibc's own per-thread cache (7 blocks a size) misses on most of them. The sidecar's executable
// replaces operator new and delete with this cache (on its worker threads), and nghttp2's
// sessions use it through nghttp2Mem(). docs/performance.md has the figures and the bound.

#include <nghttp2/nghttp2.h>

#include <cstddef>

namespace sidecar::alloc {

// Blocks of up to kMaxBlock bytes are cached, in 16-byte classes; at most kMaxCachedBytes of
// them per thread (counted with glibc's chunk headers). Larger blocks, everything past the bound,
// and every block of a thread that did not call useOnThisThread() go to malloc and free.
inline constexpr std::size_t kMaxBlock = 1024;
inline constexpr std::size_t kMaxCachedBytes = 2 * 1024 * 1024;

// malloc and free through the cache (what operator new and delete use); allocate returns null
// when malloc does.
void* allocate(std::size_t n) noexcept;
void release(void* p) noexcept;                 // p: a block from allocate or malloc
void release(void* p, std::size_t n) noexcept;  // p: a block from allocate(n)

// The calling thread caches from now on (the workers: net/worker.cpp).
void useOnThisThread() noexcept;

// Bytes this thread holds cached now (for tests and the bound).
std::size_t cachedBytes() noexcept;

// Frees this thread's cached blocks. Each worker does it after a flood of connections ended: a
// cached block is in use as far as glibc knows, and blocks scattered over an arena would keep
// malloc_trim from giving their pages back (net/worker.cpp, trimAfterFlood).
void flush() noexcept;

// For nghttp2_session_*_new3: its allocations through the cache. Null in sanitized builds, where
// the cache is not built (it would hide a use after free from the sanitizer).
nghttp2_mem* nghttp2Mem() noexcept;

}  // namespace sidecar::alloc
