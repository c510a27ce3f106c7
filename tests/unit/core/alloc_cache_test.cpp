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
}  // namespace

TEST_CASE("a released small block is the next one of its size class") {
  if (!cacheBuilt()) {
    return;
  }
  void* p = alloc::allocate(100);
  REQUIRE(p);
  const auto before = alloc::cachedBytes();
  alloc::release(p, 100);
  CHECK(alloc::cachedBytes() == before + 112);  // the 16-byte class that holds 100
  CHECK(alloc::allocate(97) == p);              // same class
  CHECK(alloc::cachedBytes() == before);
  // Released without its size (free()'s contract: nghttp2, operator delete(void*)), it finds its
  // class from the block itself.
  alloc::release(p);
  CHECK(alloc::cachedBytes() == before + 112);
  CHECK(alloc::allocate(112) == p);
  // Another class does not get it.
  void* q = alloc::allocate(200);
  CHECK(q != p);
  alloc::release(q);
  alloc::release(p);
}

TEST_CASE("large blocks and blocks past the thread's bound go back to malloc") {
  if (!cacheBuilt()) {
    return;
  }
  const auto before = alloc::cachedBytes();
  void* big = alloc::allocate(alloc::kMaxBlock + 1);
  alloc::release(big, alloc::kMaxBlock + 1);
  CHECK(alloc::cachedBytes() == before);

  std::vector<void*> blocks;
  for (std::size_t i = 0; i < 2 * alloc::kMaxCachedBytes / alloc::kMaxBlock; ++i) {
    blocks.push_back(alloc::allocate(alloc::kMaxBlock));
  }
  for (void* b : blocks) {
    alloc::release(b, alloc::kMaxBlock);
  }
  CHECK(alloc::cachedBytes() <= alloc::kMaxCachedBytes);
  CHECK(alloc::cachedBytes() > alloc::kMaxCachedBytes - alloc::kMaxBlock);
  // Taken back again: the cache empties, nothing is handed out twice.
  std::vector<void*> again;
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    again.push_back(alloc::allocate(alloc::kMaxBlock));
  }
  std::sort(again.begin(), again.end());
  CHECK(std::adjacent_find(again.begin(), again.end()) == again.end());
  for (void* b : again) {
    alloc::release(b);
  }
}

TEST_CASE("a block released on another thread joins that thread's cache") {
  if (!cacheBuilt()) {
    return;
  }
  void* p = alloc::allocate(64);
  std::size_t there = 0;
  void* reused = nullptr;
  std::thread([&] {
    alloc::release(p, 64);
    there = alloc::cachedBytes();
    reused = alloc::allocate(64);
    alloc::release(reused);
  }).join();  // its cache is freed as it exits
  CHECK(there == 64);
  CHECK(reused == p);
}

TEST_CASE("operator new and delete go through the cache") {
  if (!cacheBuilt()) {
    return;
  }
  auto* a = new std::uint64_t[20];  // 160 bytes
  const auto was = reinterpret_cast<std::uintptr_t>(a);
  const auto before = alloc::cachedBytes();
  delete[] a;
  CHECK(alloc::cachedBytes() == before + 160);
  auto* b = new std::uint64_t[19];
  CHECK(reinterpret_cast<std::uintptr_t>(b) == was);
  delete[] b;
}

TEST_CASE("nghttp2's calloc zeroes what the cache hands back") {
  auto* mem = alloc::nghttp2Mem();
  if (!mem) {
    return;
  }
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
