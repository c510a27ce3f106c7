// loadgen: an HTTP/1.1 load generator that can present a client certificate (wrk, hey and h2load
// cannot). Closed loop (as fast as answers come) or open loop at a fixed rate with latency taken
// from each request's intended send time, as wrk2 does, so a stall is not hidden.
// With --thrift it makes Thrift ping() calls instead (framed, strict binary) and counts a call only
// when its REPLY comes back with the call's seqid.
// Prints one JSON object with the figures. Not part of the product; used by tests/bench/run.py.
#include <openssl/ssl.h>

#include <algorithm>
#include <array>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
namespace po = boost::program_options;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
constexpr auto useTuple = asio::as_tuple(asio::use_awaitable);

struct Options {
  tcp::endpoint target;
  std::string host = "localhost";
  bool tls = false;
  std::string cert, key, ca;
  int connections = 32;
  double seconds = 5;
  double rate = 0;                 // 0: closed loop
  bool pacePerConnection = false;  // open loop as wrk2: each connection its own schedule
  bool newConnection = false;
  bool resume = false;
  std::string method = "GET";
  std::string path = "/ping";
  std::size_t bodySize = 0;
  int hold = 0;         // open this many connections, make one request on each, keep them idle
  bool thrift = false;  // ping() calls over framed, strict binary Thrift instead of HTTP
};

struct Stats {
  uint64_t requests = 0, errors = 0, bytes = 0, handshakes = 0;
  uint64_t warmups = 0;  // answered before the clock started: in `requests`, not in rps or latency
  std::vector<uint32_t> latencyUs;
  // Fairness: each connection's own latencies, to see whether a proxy serves some connections
  // several times before others (their counts spread, the tail gathers on a few connections).
  std::vector<std::vector<uint32_t>> perConnection;
};

struct Shared {
  Options o;
  asio::io_context& ioc;
  std::optional<ssl::context> ctx;
  std::string head;  // the request head, built once
  std::string body;
  Clock::time_point start, end;
  uint64_t slot = 0;  // open loop: the next intended send, counted from start
  SSL_SESSION* session = nullptr;
  Stats stats;
  int held = 0;
  int connecting = 0;  // handshakes in flight; --hold ramps up as a real client fleet would
  int32_t seqid = 0;   // --thrift: each call its own
  // The clock starts once every connection is through its handshake (see startWhenConnected).
  std::optional<asio::steady_timer> gate;
  int connected = 0;
  bool started = false;
};

// The first few failures are worth a line: a benchmark that silently errs measures nothing.
void report(const beast::error_code& ec, const char* what) {
  static int reported = 0;
  if (reported++ < 3) {
    std::fprintf(stderr, "loadgen: %s failed: %s\n", what, ec.message().c_str());
  }
}

void putBigEndian32(unsigned char* out, uint32_t v) {
  out[0] = static_cast<unsigned char>(v >> 24);
  out[1] = static_cast<unsigned char>(v >> 16);
  out[2] = static_cast<unsigned char>(v >> 8);
  out[3] = static_cast<unsigned char>(v);
}

uint32_t getBigEndian32(const unsigned char* in) {
  return (uint32_t{in[0]} << 24) | (uint32_t{in[1]} << 16) | (uint32_t{in[2]} << 8) |
         uint32_t{in[3]};
}

// One ping() call: the frame length, the strict binary header (version word 0x80010001 = CALL,
// the name, the seqid), an empty args struct (STOP). A success is a REPLY (0x80010002) to "ping"
// with the same seqid whose result struct starts with field 0, a string.
template <class Stream>
asio::awaitable<bool> thriftPing(Shared& s, Stream& stream, std::vector<char>& scratch) {
  constexpr uint32_t kCall = 0x80010001, kReply = 0x80010002;
  std::array<unsigned char, 21> call{};
  putBigEndian32(call.data(), call.size() - 4);
  putBigEndian32(call.data() + 4, kCall);
  putBigEndian32(call.data() + 8, 4);
  std::memcpy(call.data() + 12, "ping", 4);
  const int32_t seqid = s.seqid++;
  putBigEndian32(call.data() + 16, static_cast<uint32_t>(seqid));
  call[20] = 0;  // STOP: no arguments
  auto [wec, wn] = co_await asio::async_write(stream, asio::buffer(call), useTuple);
  if (wec) {
    report(wec, "write");
    co_return false;
  }
  std::array<unsigned char, 4> length{};
  auto [lec, ln] = co_await asio::async_read(stream, asio::buffer(length), useTuple);
  const uint32_t size = lec ? 0 : getBigEndian32(length.data());
  if (lec || size < 19 || size > scratch.size()) {
    report(lec ? lec : beast::error_code(asio::error::message_size), "read");
    co_return false;
  }
  auto [rec, rn] = co_await asio::async_read(stream, asio::buffer(scratch.data(), size), useTuple);
  if (rec) {
    report(rec, "read");
    co_return false;
  }
  s.stats.bytes += 4 + size;
  const auto* r = reinterpret_cast<const unsigned char*>(scratch.data());
  const bool ok =
      getBigEndian32(r) == kReply && getBigEndian32(r + 4) == 4 &&
      std::memcmp(r + 8, "ping", 4) == 0 && static_cast<int32_t>(getBigEndian32(r + 12)) == seqid &&
      r[16] == 11 /* string */ && r[17] == 0 && r[18] == 0;  // field id 0: the success value
  if (!ok) {
    static int reported = 0;
    if (reported++ < 3) {
      std::fprintf(stderr, "loadgen: ping() seqid %d: not a matching REPLY (%u bytes)\n", seqid,
                   size);
    }
  }
  co_return ok;
}

template <class Stream>
asio::awaitable<bool> exchange(Shared& s, Stream& stream, beast::flat_buffer& buffer,
                               std::vector<char>& scratch, bool& keepAlive) {
  if (s.o.thrift) {
    co_return co_await thriftPing(s, stream, scratch);
  }
  // Head and body in separate writes: beast::flat_stream mishandles a gathered write larger
  // than one TLS record (seen here: the body's tail never left).
  auto [wec, wn] = co_await asio::async_write(stream, asio::buffer(s.head), useTuple);
  if (!wec && !s.body.empty()) {
    std::tie(wec, wn) = co_await asio::async_write(stream, asio::buffer(s.body), useTuple);
  }
  if (wec) {
    report(wec, "write");
    co_return false;
  }
  http::response_parser<http::buffer_body> p;
  p.body_limit(boost::none);
  while (!p.is_done()) {
    p.get().body().data = scratch.data();
    p.get().body().size = scratch.size();
    auto [ec, n] = co_await http::async_read_some(stream, buffer, p, useTuple);
    if (ec == http::error::need_buffer) {
      ec = {};
    }
    if (ec) {
      report(ec, "read");
      co_return false;
    }
    s.stats.bytes += scratch.size() - p.get().body().size;
  }
  keepAlive = p.get().keep_alive();
  co_return p.get().result_int() < 500;
}

// Counts one exchange of connection `index`; latency runs from the intended send time.
void record(Shared& s, bool ok, Clock::time_point intended, int index) {
  if (!ok) {
    ++s.stats.errors;
    return;
  }
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - intended);
  ++s.stats.requests;
  s.stats.latencyUs.push_back(static_cast<uint32_t>(us.count()));
  s.stats.perConnection[static_cast<std::size_t>(index)].push_back(
      static_cast<uint32_t>(us.count()));
}

template <class Stream>
asio::awaitable<bool> exchange(Shared& s, Stream& stream, beast::flat_buffer& buffer,
                               std::vector<char>& scratch, bool& keepAlive);

// Both loops measure the steady state: the run's clock (and, at a fixed rate, its schedule)
// starts once every connection is through its handshake and one request. Started at once, the
// first requests of an open loop queued behind 32 mTLS handshakes, and those 50 ms of requests
// were the p99 of every proxy at 5,000 req/s. The request (counted in `requests` and
// `warmup_requests`, not in the rate or the latencies), because the client's handshake ends a
// flight before the server's (which still checks the client's certificate) and the first answer
// brings TLS 1.3's session tickets. Only for kept connections: --new-connection measures the
// handshakes. Once the run's length (1 to 10 s) passed without every connection ready, the clock
// starts anyway.
void startClock(Shared& s) {
  s.started = true;
  s.start = Clock::now();
  s.end = s.start + std::chrono::microseconds(static_cast<int64_t>(s.o.seconds * 1e6));
  s.gate->cancel();
}

// False: reconnect first (after 10 ms if the warm-up failed).
template <class Stream>
asio::awaitable<bool> startWhenConnected(Shared& s, Stream& stream, beast::flat_buffer& buffer,
                                         std::vector<char>& scratch, asio::steady_timer& timer) {
  if (s.started || s.o.newConnection || s.o.hold) {
    co_return true;
  }
  if (Clock::now() >= s.gate->expiry()) {  // warm-ups keep failing: measure the failures
    startClock(s);
    co_return true;
  }
  bool keepAlive = true;
  const auto bytes = s.stats.bytes;
  const bool ok = co_await exchange(s, stream, buffer, scratch, keepAlive);
  s.stats.bytes = bytes;
  if (!ok) {
    ++s.stats.errors;
    timer.expires_after(std::chrono::milliseconds(10));
    co_await timer.async_wait(useTuple);
    co_return false;
  }
  ++s.stats.requests;  // an answered request all the same (servers count it)
  ++s.stats.warmups;
  if (!s.started) {
    if (++s.connected < s.o.connections) {
      co_await s.gate->async_wait(useTuple);
    }
    if (!s.started) {
      startClock(s);
    }
  }
  co_return keepAlive;  // false: a server that closes after each answer
}

// The open-loop schedule of one connection: its index, and how many of its own slots it used.
struct Pace {
  int index = 0;
  uint64_t used = 0;
};

// Waits for the next open-loop slot; returns its intended time (now, in closed loop). By default
// one schedule serves all connections (slot k at k / rate, taken by whichever connection is free:
// a stalled connection delays only its own request). --pace-per-connection does as wrk2: each
// connection sends at rate / connections on its own schedule (staggered by index), so requests
// queue behind a stalled connection and an unfair proxy shows in the tail.
asio::awaitable<Clock::time_point> nextSend(Shared& s, asio::steady_timer& timer, Pace& pace) {
  if (s.o.rate <= 0) {
    co_return Clock::now();
  }
  const double slot = s.o.pacePerConnection ? static_cast<double>(pace.index) +
                                                  static_cast<double>(pace.used++) *
                                                      static_cast<double>(s.o.connections)
                                            : static_cast<double>(s.slot++);
  auto intended = s.start + std::chrono::nanoseconds(static_cast<int64_t>(slot * 1e9 / s.o.rate));
  if (intended > Clock::now()) {
    timer.expires_at(intended);
    co_await timer.async_wait(useTuple);
  }
  co_return intended;
}

asio::awaitable<void> runTls(Shared& s, bool holdMode, Pace pace) {
  asio::steady_timer timer(s.ioc);
  std::vector<char> scratch(64 * 1024);
  std::optional<beast::ssl_stream<beast::tcp_stream>> stream;
  beast::flat_buffer buffer;
  while (Clock::now() < s.end) {
    if (!stream) {
      while (holdMode && s.connecting >= 64) {
        timer.expires_after(std::chrono::milliseconds(1));
        co_await timer.async_wait(useTuple);
      }
      ++s.connecting;
      stream.emplace(s.ioc, *s.ctx);
      SSL_set_tlsext_host_name(stream->native_handle(), s.o.host.c_str());
      if (s.o.resume && s.session) {
        SSL_set_session(stream->native_handle(), s.session);
      }
      auto& lowest = beast::get_lowest_layer(*stream);
      lowest.expires_after(std::chrono::seconds(10));
      auto [cec] = co_await lowest.async_connect(s.o.target, useTuple);
      if (!cec) {
        lowest.socket().set_option(tcp::no_delay(true));
      }
      auto [hec] = cec ? std::tuple{cec}
                       : co_await stream->async_handshake(ssl::stream_base::client, useTuple);
      --s.connecting;
      if (cec || hec) {
        report(cec ? cec : hec, cec ? "connect" : "handshake");
        ++s.stats.errors;
        stream.reset();
        timer.expires_after(std::chrono::milliseconds(10));
        co_await timer.async_wait(useTuple);
        continue;
      }
      ++s.stats.handshakes;
      lowest.expires_never();
      buffer.clear();
      if (!co_await startWhenConnected(s, *stream, buffer, scratch, timer)) {
        stream.reset();
        continue;
      }
    }
    auto intended = co_await nextSend(s, timer, pace);
    if (Clock::now() >= s.end && !holdMode) {
      break;
    }
    bool keepAlive = true;
    bool ok = co_await exchange(s, *stream, buffer, scratch, keepAlive);
    record(s, ok, intended, pace.index);
    // TLS 1.3 tickets arrive after the handshake, with the first answer: keep one to resume.
    if (s.o.resume && ok && (!s.session || !SSL_session_reused(stream->native_handle()))) {
      if (s.session) {
        SSL_SESSION_free(s.session);
      }
      s.session = SSL_get1_session(stream->native_handle());
    }
    if (holdMode) {
      ++s.held;
      if (s.held == s.o.hold) {
        std::fprintf(stderr, "held %d\n", s.held);
      }
      timer.expires_at(s.end);
      co_await timer.async_wait(useTuple);
      co_return;
    }
    if (!ok || !keepAlive || s.o.newConnection) {
      SSL_shutdown(stream->native_handle());  // close_notify, without waiting for the peer's
      beast::error_code ignored;
      beast::get_lowest_layer(*stream).socket().close(ignored);
      stream.reset();
    }
  }
}

asio::awaitable<void> runPlain(Shared& s, Pace pace) {
  asio::steady_timer timer(s.ioc);
  std::vector<char> scratch(64 * 1024);
  std::optional<beast::tcp_stream> stream;
  beast::flat_buffer buffer;
  while (Clock::now() < s.end) {
    if (!stream) {
      stream.emplace(s.ioc);
      auto [cec] = co_await stream->async_connect(s.o.target, useTuple);
      if (cec) {
        ++s.stats.errors;
        stream.reset();
        timer.expires_after(std::chrono::milliseconds(10));
        co_await timer.async_wait(useTuple);
        continue;
      }
      stream->socket().set_option(tcp::no_delay(true));
      buffer.clear();
      if (!co_await startWhenConnected(s, *stream, buffer, scratch, timer)) {
        stream.reset();
        continue;
      }
    }
    auto intended = co_await nextSend(s, timer, pace);
    if (Clock::now() >= s.end) {
      break;
    }
    bool keepAlive = true;
    bool ok = co_await exchange(s, *stream, buffer, scratch, keepAlive);
    record(s, ok, intended, pace.index);
    if (!ok || !keepAlive || s.o.newConnection) {
      stream.reset();
    }
  }
}

int main(int argc, char** argv) {
  Options o;
  std::string target, duration;
  po::options_description d(
      "loadgen: HTTP/1.1 (or Thrift ping()) load with optional mTLS\n\nFlags");
  d.add_options()("help,h", "this help")("target", po::value(&target)->required(), "ip:port")(
      "host", po::value(&o.host), "Host header and SNI (default localhost)")(
      "tls", po::bool_switch(&o.tls), "speak TLS")(
      "cert", po::value(&o.cert), "client certificate")("key", po::value(&o.key), "client key")(
      "ca", po::value(&o.ca), "CA to verify the server with")(
      "connections,c", po::value(&o.connections), "concurrent connections (default 32)")(
      "seconds,d", po::value(&o.seconds), "how long to run (default 5)")(
      "rate,R", po::value(&o.rate), "open loop: requests per second in all (default: closed loop)")(
      "pace-per-connection", po::bool_switch(&o.pacePerConnection),
      "open loop as wrk2: each connection its own schedule at rate/connections")(
      "new-connection", po::bool_switch(&o.newConnection), "a new connection per request")(
      "resume", po::bool_switch(&o.resume), "resume TLS sessions on new connections")(
      "method", po::value(&o.method), "GET or POST (default GET)")(
      "path", po::value(&o.path), "request target (default /ping)")(
      "body-size", po::value(&o.bodySize), "request body bytes (POST)")(
      "hold", po::value(&o.hold),
      "open this many TLS connections, one request each, keep them idle")(
      "thrift", po::bool_switch(&o.thrift),
      "Thrift ping() calls (framed, strict binary), not HTTP");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, d), vm);
    if (vm.count("help")) {
      std::cout << d;
      return 0;
    }
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "loadgen: " << e.what() << "\n";
    return 2;
  }
  auto colon = target.rfind(':');
  o.target = tcp::endpoint(asio::ip::make_address(target.substr(0, colon)),
                           static_cast<uint16_t>(std::stoi(target.substr(colon + 1))));
  asio::io_context ioc{1};
  Shared s{o, ioc, std::nullopt, {}, {}, {}, {}, 0, nullptr, {}, 0, 0, 0, std::nullopt, 0, false};
  if (o.tls) {
    s.ctx.emplace(ssl::context::tls_client);
    SSL_CTX_set_min_proto_version(s.ctx->native_handle(), TLS1_3_VERSION);
    SSL_CTX_set_session_cache_mode(s.ctx->native_handle(), SSL_SESS_CACHE_CLIENT);
    if (!o.ca.empty()) {
      s.ctx->load_verify_file(o.ca);
      s.ctx->set_verify_mode(ssl::verify_peer);
    }
    if (!o.cert.empty()) {
      s.ctx->use_certificate_chain_file(o.cert);
      s.ctx->use_private_key_file(o.key, ssl::context::pem);
    }
  }
  s.body.assign(o.bodySize, 'x');
  s.head = o.method + " " + o.path + " HTTP/1.1\r\nHost: " + o.host + "\r\n";
  if (o.method != "GET" || o.bodySize) {
    s.head += "Content-Length: " + std::to_string(o.bodySize) + "\r\n";
  }
  s.head += "\r\n";
  s.stats.latencyUs.reserve(1 << 20);
  const int n = o.hold ? o.hold : o.connections;
  s.stats.perConnection.resize(static_cast<std::size_t>(n));
  s.start = Clock::now();
  s.end = s.start + std::chrono::microseconds(static_cast<int64_t>(o.seconds * 1e6));
  // Room to connect (handshakes ramp slowly in sanitized builds): the run's length, 1 to 10 s.
  const auto room = std::chrono::duration_cast<Clock::duration>(
      std::chrono::duration<double>(std::clamp(o.seconds, 1.0, 10.0)));
  s.gate.emplace(ioc, s.start + room);
  if (!o.newConnection && !o.hold) {
    s.end += room;  // startWhenConnected sets the real end
  }
  for (int i = 0; i < n; ++i) {
    if (o.tls) {
      asio::co_spawn(ioc, runTls(s, o.hold > 0, Pace{i}), asio::detached);
    } else {
      asio::co_spawn(ioc, runPlain(s, Pace{i}), asio::detached);
    }
  }
  ioc.run();
  double elapsed =
      std::min(o.seconds, std::chrono::duration<double>(Clock::now() - s.start).count());
  auto& lat = s.stats.latencyUs;
  std::sort(lat.begin(), lat.end());
  auto pct = [](const std::vector<uint32_t>& v, double q) -> uint32_t {
    return v.empty() ? 0
                     : v[std::min(v.size() - 1,
                                  static_cast<std::size_t>(q * static_cast<double>(v.size())))];
  };
  // wrk 4's correction for coordinated omission, for comparing closed-loop tails with wrk's: with
  // the expected interval = the run's time / requests per connection, each sample x >= 2 intervals
  // also counts x - interval, x - 2 intervals, ... while above one interval (the requests a
  // stalled connection did not send). Open loop needs none: latency runs from intended times.
  std::vector<uint32_t> corrected = lat;
  const uint64_t measured = s.stats.requests - s.stats.warmups;
  const auto perConnection = measured / static_cast<uint64_t>(n);
  if (o.rate <= 0 && perConnection > 0) {
    const auto interval = static_cast<int64_t>(elapsed * 1e6) / static_cast<int64_t>(perConnection);
    for (int64_t x : lat) {
      if (interval <= 0 || x < 2 * interval) {
        continue;
      }
      for (int64_t m = x - interval; m > interval; m -= interval) {
        corrected.push_back(static_cast<uint32_t>(m));
      }
    }
    std::sort(corrected.begin(), corrected.end());
  }
  // Per connection: the fewest and most requests, Jain's index over the counts (1 = all equal,
  // 1/n = one connection took everything), and the spread of the connections' own p99s.
  uint64_t fewest = UINT64_MAX, most = 0;
  uint32_t p99Low = UINT32_MAX, p99High = 0;
  double sum = 0, sumSquares = 0;
  for (auto& v : s.stats.perConnection) {
    fewest = std::min<uint64_t>(fewest, v.size());
    most = std::max<uint64_t>(most, v.size());
    sum += static_cast<double>(v.size());
    sumSquares += static_cast<double>(v.size()) * static_cast<double>(v.size());
    if (!v.empty()) {
      std::sort(v.begin(), v.end());
      p99Low = std::min(p99Low, pct(v, 0.99));
      p99High = std::max(p99High, pct(v, 0.99));
    }
  }
  const double jain = sumSquares > 0 ? sum * sum / (static_cast<double>(n) * sumSquares) : 0;
  if (p99Low == UINT32_MAX) {
    p99Low = 0;
  }
  uint64_t sent = measured * o.bodySize;
  std::printf(
      "{\"requests\":%llu,\"errors\":%llu,\"handshakes\":%llu,\"seconds\":%.3f,\"rps\":%.1f,"
      "\"mbps\":%.2f,\"p50_us\":%u,\"p90_us\":%u,\"p99_us\":%u,\"p999_us\":%u,\"max_us\":%u,"
      "\"p99_corrected_us\":%u,\"held\":%d,\"warmup_requests\":%llu,\"conn_requests_min\":%llu,"
      "\"conn_requests_max\":%llu,"
      "\"conn_jain\":%.4f,\"conn_p99_min_us\":%u,\"conn_p99_max_us\":%u}\n",
      (unsigned long long)s.stats.requests, (unsigned long long)s.stats.errors,
      (unsigned long long)s.stats.handshakes, elapsed, static_cast<double>(measured) / elapsed,
      static_cast<double>(s.stats.bytes + sent) / elapsed / 1e6, pct(lat, 0.5), pct(lat, 0.9),
      pct(lat, 0.99), pct(lat, 0.999), lat.empty() ? 0 : lat.back(), pct(corrected, 0.99), s.held,
      (unsigned long long)s.stats.warmups, (unsigned long long)(fewest == UINT64_MAX ? 0 : fewest),
      (unsigned long long)most, jain, p99Low, p99High);
  return 0;
}
