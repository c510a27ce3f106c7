#pragma once
// An in-memory stream (Beast's test stream) with the deadline calls the listeners' streams have,
// for unit tests of the code that serves HTTP on any stream.

#include <boost/beast/_experimental/test/stream.hpp>

#include "net/io.h"

namespace sidecar::test {

struct TimedStream : boost::beast::test::basic_stream<IoExecutor> {
  using boost::beast::test::basic_stream<IoExecutor>::basic_stream;
  void expires_after(Duration) {}
};

}  // namespace sidecar::test
