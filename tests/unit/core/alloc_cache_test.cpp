// The per-thread block cache in front of malloc (core/alloc_cache.h).
#include "core/alloc_cache.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace alloc = sidecar::alloc;

namespace {
// Sanitized builds leave the cache out: malloc and free as they are.
bool cacheBuilt() { return alloc::nghttp2Mem() != nullptr; }

// The test's thread caches, starting empty; emptied again when the test ends, so that no test
// depends on what another left (the runner's thread is shared by every test case).
struct FreshCache {
  FreshCache() {
    alloc::useOnThisThread();
    alloc::flush();
  }
  ~FreshCache() { alloc::flush(); }
};

// glibc's chunk for a block of the class that holds n bytes.
constexpr std::size_t footprint(std::size_t n) { return (n + 15) / 16 * 16 + 16; }
}  // namespace

TEST_CASE("a released small block is the next one of its size class") {
  if (!cacheBuilt()) {
    return;
  }
  FreshCache fresh;
  void* p = alloc::allocate(100);
  REQUIRE(p);
  alloc::release(p, 100);
  CHECK(alloc::cachedBytes() == footprint(100));
  CHECK(alloc::allocate(97) == p);  // same class
  CHECK(alloc::cachedBytes() == 0);
  // Released without its size (free()'s contract: nghttp2, operator delete(void*)), it finds its
  // class from the block itself.
  alloc::release(p);
  CHECK(alloc::cachedBytes() == footprint(100));
  CHECK(alloc::allocate(112) == p);
  // Another class does not get it.
  alloc::release(p);
  void* q = alloc::allocate(200);
  CHECK(q != p);
  CHECK(alloc::cachedBytes() == footprint(100));
  alloc::release(q);
  CHECK(alloc::cachedBytes() == footprint(100) + footprint(200));
  alloc::flush();  // both given back to malloc
  CHECK(alloc::cachedBytes() == 0);
}

TEST_CASE("large blocks and blocks past the thread's bound go back to malloc") {
  if (!cacheBuilt()) {
    return;
  }
  FreshCache fresh;
  void* big = alloc::allocate(alloc::kMaxBlock + 1);
  alloc::release(big, alloc::kMaxBlock + 1);
  CHECK(alloc::cachedBytes() == 0);

  std::vector<void*> blocks;  // (reserved: a vector's growth frees blocks into the cache too)
  blocks.reserve(2 * alloc::kMaxCachedBytes / alloc::kMaxBlock);
  for (std::size_t i = 0; i < 2 * alloc::kMaxCachedBytes / alloc::kMaxBlock; ++i) {
    blocks.push_back(alloc::allocate(alloc::kMaxBlock));
  }
  for (void* b : blocks) {
    alloc::release(b, alloc::kMaxBlock);
  }
  CHECK(alloc::cachedBytes() <= alloc::kMaxCachedBytes);
  CHECK(alloc::cachedBytes() > alloc::kMaxCachedBytes - footprint(alloc::kMaxBlock));
  // Taken back again: the cache empties, nothing is handed out twice.
  std::vector<void*> again;
  again.reserve(blocks.size());
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    again.push_back(alloc::allocate(alloc::kMaxBlock));
  }
  CHECK(alloc::cachedBytes() == 0);
  std::sort(again.begin(), again.end());
  CHECK(std::adjacent_find(again.begin(), again.end()) == again.end());
  for (void* b : again) {
    alloc::release(b);
  }
}

TEST_CASE("a block released on another worker joins that worker's cache; other threads keep none") {
  if (!cacheBuilt()) {
    return;
  }
  FreshCache fresh;
  void* p = alloc::allocate(64);
  std::size_t there = 0;
  void* reused = nullptr;
  std::thread([&] {
    alloc::useOnThisThread();
    alloc::release(p, 64);
    there = alloc::cachedBytes();
    reused = alloc::allocate(64);
    alloc::release(reused);
  }).join();  // its cache is freed as it exits
  CHECK(there == footprint(64));
  CHECK(reused == p);

  // A thread that is not a worker (a log writer freeing what workers made) caches nothing.
  void* q = alloc::allocate(64);
  std::size_t kept = 1;
  std::thread([&] {
    alloc::release(q, 64);
    kept = alloc::cachedBytes();
  }).join();
  CHECK(kept == 0);
}

TEST_CASE("operator new and delete go through the cache") {
  if (!cacheBuilt()) {
    return;
  }
  FreshCache fresh;
  auto* a = new std::uint64_t[20];  // 160 bytes
  const auto was = reinterpret_cast<std::uintptr_t>(a);
  delete[] a;
  CHECK(alloc::cachedBytes() == footprint(160));
  auto* b = new std::uint64_t[19];
  CHECK(reinterpret_cast<std::uintptr_t>(b) == was);
  delete[] b;
}

TEST_CASE("nghttp2's calloc zeroes what the cache hands back") {
  auto* mem = alloc::nghttp2Mem();
  if (!mem) {
    return;
  }
  FreshCache fresh;
  auto* p = static_cast<unsigned char*>(mem->malloc(300, mem->mem_user_data));
  std::memset(p, 0xab, 300);
  const auto was = reinterpret_cast<std::uintptr_t>(p);
  mem->free(p, mem->mem_user_data);
  auto* q = static_cast<unsigned char*>(mem->calloc(3, 100, mem->mem_user_data));
  REQUIRE(q);
  CHECK(reinterpret_cast<std::uintptr_t>(q) == was);
  CHECK(std::all_of(q, q + 300, [](unsigned char c) { return c == 0; }));
  q = static_cast<unsigned char*>(mem->realloc(q, 5000, mem->mem_user_data));
  REQUIRE(q);
  CHECK(q[299] == 0);
  mem->free(q, mem->mem_user_data);
  CHECK(mem->calloc(SIZE_MAX / 2, 4, mem->mem_user_data) == nullptr);
}
