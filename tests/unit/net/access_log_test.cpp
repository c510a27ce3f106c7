// The access log's batches: every line written whole, in order per worker; a stalled reader
// costs dropped lines (counted), never a blocked worker.
#include "net/access_log.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <limits.h>
#include <prometheus/counter.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace sidecar {
namespace {

std::vector<std::string> readLines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) {
    lines.push_back(l);
  }
  return lines;
}

TEST_CASE("access log: two workers' lines, each whole, stamped, in order per worker") {
  char dir[] = "/tmp/access-log-test-XXXXXX";
  REQUIRE(::mkdtemp(dir));
  const std::string path = std::string(dir) + "/access.log";
  prometheus::Counter dropped;
  constexpr int kLines = 5000;  // several 16 KiB batches per worker
  {
    AccessLog log(path, &dropped);
    auto work = [&log](int worker) {
      AccessLog::Buffer b(log);
      for (int i = 0; i < kLines; ++i) {
        b.line("worker={} n={} path=\"{}\"", worker, i, std::string(40, 'x'));
      }
    };  // the Buffer's end hands over the rest
    std::thread a(work, 0), c(work, 1);
    a.join();
    c.join();
  }  // the log's end writes everything handed over
  const auto lines = readLines(path);
  REQUIRE(lines.size() == 2 * kLines);
  const std::regex shape(
      R"(^ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d worker=([01]) n=(\d+) path="x{40}"$)");
  int next[2] = {0, 0};
  for (const auto& l : lines) {
    std::smatch m;
    REQUIRE_MESSAGE(std::regex_match(l, m, shape), l);
    const int worker = std::stoi(m[1]);
    CHECK(std::stoi(m[2]) == next[worker]);
    ++next[worker];
  }
  CHECK(dropped.Value() == 0);
  std::remove(path.c_str());
  ::rmdir(dir);
}

TEST_CASE("access log: a stalled pipe drops lines past 4 MiB and counts them; none is cut") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  prometheus::Counter dropped;
  const std::string line(200, 'y');
  constexpr int kLines = 40'000;  // 8 MiB with the stamps: past the pipe and the queue
  std::string got;
  std::thread reader;
  {
    AccessLog log("/dev/fd/" + std::to_string(fds[1]), &dropped);
    {
      AccessLog::Buffer b(log);
      const auto start = std::chrono::steady_clock::now();
      for (int i = 0; i < kLines; ++i) {
        b.line("n={} {}", i, line);
      }
      // Nobody reads: the writer blocks on the full pipe, the worker does not.
      CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(5));
    }
    CHECK(dropped.Value() > 0);
    reader = std::thread([&] {
      char buf[65536];
      for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) {
        got.append(buf, static_cast<std::size_t>(n));
      }
    });
  }  // the writer drains its queue into the pipe, then stops
  ::close(fds[1]);
  reader.join();
  ::close(fds[0]);
  std::istringstream in(got);
  int written = 0;
  for (std::string l; std::getline(in, l); ++written) {
    REQUIRE(l.size() > line.size());
    CHECK(l.compare(l.size() - line.size(), line.size(), line) == 0);
  }
  CHECK(written + static_cast<int>(dropped.Value()) == kLines);
}

TEST_CASE("access log: to a pipe, a line longer than PIPE_BUF still arrives whole and in order") {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  std::string got;
  std::thread reader([&] {
    char buf[4096];
    for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) {
      got.append(buf, static_cast<std::size_t>(n));
    }
  });
  const std::string longPath(3 * PIPE_BUF, 'p');
  {
    AccessLog log("/dev/fd/" + std::to_string(fds[1]), nullptr);
    AccessLog::Buffer b(log);
    b.line("n=1");
    b.line("n=2 path=\"{}\"", longPath);
    b.line("n=3");
  }
  ::close(fds[1]);
  reader.join();
  ::close(fds[0]);
  std::istringstream in(got);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) {
    lines.push_back(l.substr(l.find(' ') + 1));  // without the time stamp
  }
  REQUIRE(lines.size() == 3);
  CHECK(lines[0] == "n=1");
  CHECK(lines[1] == "n=2 path=\"" + longPath + "\"");
  CHECK(lines[2] == "n=3");
}

TEST_CASE("access log: a file that cannot be opened throws") {
  prometheus::Counter dropped;
  CHECK_THROWS_AS(AccessLog("/nonexistent-dir/access.log", &dropped), std::system_error);
}

}  // namespace
}  // namespace sidecar
