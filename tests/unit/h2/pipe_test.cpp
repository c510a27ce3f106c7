// A proxied body's pipe (h2/pipe.h): what a reader takes, what it may take again after a refused
// stream, and what the producer's window may grow by, never twice for the same bytes.
#include "h2/pipe.h"

#include <doctest/doctest.h>

#include <string>

namespace sidecar::h2 {
namespace {

std::string takeAll(Pipe& p, std::size_t step = 7) {
  std::string out;
  std::uint8_t buf[64];
  while (std::size_t n = p.take(buf, std::min(step, sizeof buf))) {
    out.append(reinterpret_cast<const char*>(buf), n);
  }
  return out;
}

TEST_CASE("a pipe gives its bytes once, in order, and says when it is drained") {
  Pipe p;
  p.push("hello ", 6);
  p.push("world", 5);
  CHECK(p.total() == 11);
  CHECK(takeAll(p) == "hello world");
  CHECK_FALSE(p.drained());
  p.end();
  CHECK(p.drained());
  CHECK(p.newlyTaken() == 11);
  CHECK(p.newlyTaken() == 0);
}

TEST_CASE("a kept body is given again after rewind, and counted for the window once") {
  Pipe p;
  p.keep(1024);
  p.push("request body", 12);
  p.end();
  CHECK(takeAll(p, 5) == "request body");
  CHECK(p.newlyTaken() == 12);
  CHECK(p.drained());
  REQUIRE(p.rewindable());
  REQUIRE(p.rewind());
  CHECK_FALSE(p.drained());
  CHECK(takeAll(p, 4) == "request body");
  CHECK(p.newlyTaken() == 0);  // the caller's window already grew by these
  p.forget();
  CHECK_FALSE(p.rewind());
}

TEST_CASE("a body larger than what is kept cannot be given again") {
  Pipe p;
  p.keep(8);
  p.push("0123456789abcdef", 16);
  std::uint8_t buf[16];
  CHECK(p.take(buf, 6) == 6);
  CHECK(p.rewindable());
  CHECK(p.take(buf, 6) == 6);  // past 8 bytes: no longer kept
  CHECK_FALSE(p.rewindable());
  CHECK_FALSE(p.rewind());
  CHECK(p.newlyTaken() == 12);
  CHECK(takeAll(p) == "cdef");
}

TEST_CASE("a pipe never read can be rewound; keep() after a take keeps nothing") {
  Pipe p;
  p.push("abc", 3);
  CHECK(p.rewindable());
  CHECK(p.rewind());
  std::uint8_t buf[2];
  CHECK(p.take(buf, 2) == 2);
  p.keep(1024);
  CHECK_FALSE(p.rewind());
}

TEST_CASE("discard gives back only bytes the window has not grown by yet") {
  Pipe p;
  p.keep(1024);
  p.push("0123456789", 10);
  std::uint8_t buf[6];
  CHECK(p.take(buf, 6) == 6);
  CHECK(p.newlyTaken() == 6);
  REQUIRE(p.rewind());
  CHECK(p.take(buf, 2) == 2);
  // Unread: bytes 2..9, of which 2..5 were taken (and counted) before the rewind.
  CHECK(p.discard() == 4);
  CHECK(p.empty());
  p.push("xy", 2);
  CHECK(p.discard() == 2);
}

}  // namespace
}  // namespace sidecar::h2
