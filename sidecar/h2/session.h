#pragma once
// One HTTP/2 connection, either role, over any Asio stream (the caller's TLS stream, a plain
// socket to the local service): nghttp2 is the frame, HPACK and flow-control engine
// (docs/http2.md says why a library), and this is the connection around it. A reader coroutine
// feeds nghttp2 what arrives, a writer coroutine sends what nghttp2 has queued, and each stream's
// events go to its StreamEnd. Flow control is manual for streams: a DATA frame's bytes are
// acknowledged on the stream (WINDOW_UPDATE) only once whoever reads them took them (consume()),
// so a slow reader on the other side holds that stream's sender back instead of growing our
// memory (a stream's window at most). The connection's window is acknowledged as bytes arrive:
// one slow stream must not hold back the connection's others (a connection to the local service
// or a member carries many callers' streams).

#include <nghttp2/nghttp2.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "core/config.h"
#include "net/io.h"

namespace sidecar::h2 {

struct Field {
  std::string name;
  std::string value;
};
using Fields = std::vector<Field>;

// The settings we announce, and the bounds we hold the peer to.
struct Settings {
  std::uint32_t maxConcurrentStreams = 100;
  std::uint32_t streamWindow = 64 * 1024;    // what a stream may send us unacknowledged
  std::uint32_t connectionWindow = 1 << 20;  // and all streams together
  std::uint32_t maxHeaderList = 64 * 1024;   // a head's decoded size (RFC 9113's definition)
  std::uint32_t headerTableSize = 4096;      // HPACK, both directions
  // Frames that carry nothing a request needs (PING, SETTINGS, PRIORITY, empty DATA, a
  // WINDOW_UPDATE while nothing waits), per second, before the connection is ended as a flood.
  unsigned controlFramesPerSecond = 1000;
};

class Session;

// One stream as one session sees it: what arrives on it, and the body it sends.
class StreamEnd {
 public:
  virtual ~StreamEnd() = default;
  // A header field of the head or of the trailers (trailers: after headersEnd once).
  virtual void header(std::string_view name, std::string_view value) = 0;
  // The head (or the trailers) is complete; endStream: nothing follows.
  virtual void headersEnd(bool endStream) = 0;
  virtual void data(const std::uint8_t* p, std::size_t n) = 0;
  virtual void dataEnd() = 0;  // END_STREAM on a DATA frame
  // The stream is closed (error: its RST_STREAM code, or 0); the session forgets the end after.
  virtual void closed(std::uint32_t error) = 0;
  // nghttp2's data source: bytes of the body into buf, NGHTTP2_ERR_DEFERRED when none are there
  // yet (resume() once there are), or set NGHTTP2_DATA_FLAG_EOF.
  virtual ssize_t readBody(std::uint8_t* buf, std::size_t length, std::uint32_t* flags) = 0;
  // The client role: the request's HEADERS went out (before, nothing of it was sent).
  virtual void headSent() {}
  // The server role: the answer's END_STREAM went out before the request's end came. True: the
  // rest of the request is not wanted, and the caller is asked to stop sending it (RST_STREAM
  // NO_ERROR, RFC 9113 8.1); false: the request goes on (an upstream still reading it).
  virtual bool answerEnded() { return false; }
};

// Connection-level events a listener counts.
struct SessionCounters {
  std::uint64_t resetsReceived = 0;
  std::uint64_t resetsSent = 0;
  std::uint64_t goawaySent = 0;
  std::uint64_t goawayReceived = 0;
  std::uint32_t lastGoawayCode = 0;
  bool flood = false;  // ended for a control-frame flood (ENHANCE_YOUR_CALM)
};

class Session {
 public:
  enum class Role { server, client };
  using Clock = std::chrono::steady_clock;

  Session(Role role, IoExecutor ex, const Settings& settings);
  virtual ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  nghttp2_session* native() { return ng_; }
  Role role() const { return role_; }
  const SessionCounters& counters() const { return counters_; }
  std::size_t streams() const { return ends_.size(); }

  // The server role: a new stream (its request's first HEADERS); return its end, or null to
  // refuse it (RST_STREAM REFUSED_STREAM).
  virtual StreamEnd* streamOpened(std::int32_t) { return nullptr; }

  // Sends a head (and a body if body: readBody is asked for it); the server role answers stream
  // id, the client role opens a stream (returns its id, or a negative nghttp2 error).
  int respond(std::int32_t id, const Fields& head, bool body);
  std::int32_t request(const Fields& head, bool body, StreamEnd& end);
  int trailers(std::int32_t id, const Fields& fields);
  void reset(std::int32_t id, std::uint32_t error);
  void resume(std::int32_t id);
  // Acknowledges n bytes of stream id's DATA as read (a WINDOW_UPDATE when enough are).
  void consume(std::int32_t id, std::size_t n);
  // NO_ERROR: no new stream, the streams in flight finish, then the connection ends (GOAWAY
  // with the last stream id processed). Another code: the connection ends now.
  void goAway(std::uint32_t error = NGHTTP2_NO_ERROR);
  // Forgets a stream's end (its owner is gone); the stream is reset (with error) if still open.
  void detach(std::int32_t id, StreamEnd& end, std::uint32_t error = NGHTTP2_CANCEL);

  // True while the connection may take another stream (no GOAWAY either way, ids left, not idle
  // past its deadline: the sweep may close it before a new stream's HEADERS goes out).
  bool usable() const;
  bool alive() const { return !dead_; }
  // run() began: the connection was made (a stream closed unsent on it was not refused for a
  // connection that never came).
  bool ran() const { return deadlineTarget_ != nullptr; }
  // Wakes the writer: something was submitted.
  void signal();
  // Tells every stream end it is closed (error), as when the connection could not be made.
  void closeAll(std::uint32_t error = NGHTTP2_CANCEL);
  // The peer's bound on concurrent streams (ours as a client until its SETTINGS came).
  std::uint32_t peerMaxStreams() const;
  // New streams may still be opened: no GOAWAY was received (nor our graceful one queued), the
  // connection is alive.
  bool takesRequests() const;

  // Runs the connection on io until it ends (then every stream end has been told closed).
  // writeTimeout bounds one write (a peer that does not read); idleTimeout, the time with no
  // stream open before a GOAWAY ends the connection (counted from the last stream's close: a peer
  // that only pings does not keep it).
  template <class Stream>
  awaitable<void> run(Stream& io, Duration writeTimeout, Duration idleTimeout);

 private:
  struct Callbacks;
  friend struct Callbacks;

  // nghttp2 output into out_ (up to about 64 KiB); false on a fatal error.
  bool collect(std::string& out);
  // Counts a frame that carries nothing; false when the connection is to end for a flood.
  bool countControl();
  // A stream's end, none when it was detached: a request detached while its HEADERS was queued
  // may have been opened by nghttp2 with the gone end as its user data (and even closed at once,
  // when cancelled), so its callbacks must not reach that end.
  StreamEnd* endOf(std::int32_t id);
  void setDeadline(bool writing);
  template <class Stream>
  awaitable<void> writer(Stream& io);

  Role role_;
  Settings settings_;
  nghttp2_session* ng_ = nullptr;
  std::unordered_set<StreamEnd*> ends_;  // attached ends, for closeAll
  // The client role's requests whose HEADERS is still queued: nghttp2 holds their end in the
  // queued item, out of reach, until it opens the stream. A detached one is null here, and the
  // stream it opens is cut from its end at once (frameSent).
  std::unordered_map<std::int32_t, StreamEnd*> queued_;
  SessionCounters counters_;
  SteadyTimer wake_;
  SteadyTimer writerEnded_;  // cancelled when the writer is done
  bool signalled_ = false;
  bool writing_ = false;
  bool writerWaiting_ = false;
  bool writerDone_ = false;
  bool dead_ = false;
  bool readerDone_ = false;
  Duration writeTimeout_{60'000};
  Duration idleTimeout_{60'000};
  // When the connection, idle since the last stream closed, ends; none while a stream is open.
  // Frames that open no stream (PING, SETTINGS, WINDOW_UPDATE) do not move it.
  Clock::time_point idleUntil_{};
  // The last stream id of the graceful GOAWAY we queued (-1: none): streams above it are refused.
  std::int32_t goawayLastId_ = -1;
  // The deadline's socket, as a function of run's stream (set by run).
  void* deadlineTarget_ = nullptr;
  void (*setDeadlineFn_)(void*, Clock::time_point) = nullptr;
  void (*clearDeadlineFn_)(void*) = nullptr;
  void (*cancelFn_)(void*) = nullptr;
  Clock::time_point floodWindow_{};
  unsigned floodCount_ = 0;
};

// ---- run, a template on the stream -----------------------------------------------------------

namespace detail {
template <class Stream>
auto& lowestOf(Stream& s) {
  if constexpr (requires { s.lowest_layer(); }) {
    return s.lowest_layer();
  } else {
    return s;
  }
}

constexpr std::size_t kReadSize = 16 * 1024;

// The worker's read buffer, for streams that can wait for readability without one and then read
// at once (TlsStream): nghttp2 takes what it needs of the bytes before the reader waits again, so
// one buffer serves every connection of the thread, and an idle connection holds none.
inline std::uint8_t* threadReadBuffer() {
  thread_local std::uint8_t buffer[kReadSize];
  return buffer;
}

// Streams that can wait for readability without a buffer, then read at once (TlsStream).
template <class Stream>
concept ReadsWhenReadable = requires(Stream& io, std::size_t& n) {
  io.async_wait_readable(useTuple);
  io.read_some_now(asio::mutable_buffer{}, n);
};
}  // namespace detail

template <class Stream>
awaitable<void> Session::writer(Stream& io) {
  std::string out;
  for (;;) {
    if (!collect(out)) {
      break;
    }
    if (!out.empty()) {
      setDeadline(true);
      auto [ec, n] = co_await asio::async_write(io, asio::buffer(out), useTuple);
      writing_ = false;
      if (ec) {
        dead_ = true;
        break;
      }
      if (out.capacity() > 16 * 1024) {
        std::string().swap(out);  // a burst's batch is not kept by an idle connection
      }
      setDeadline(false);
      continue;
    }
    if (dead_ || readerDone_ ||
        (nghttp2_session_want_read(ng_) == 0 && nghttp2_session_want_write(ng_) == 0)) {
      break;
    }
    if (signalled_) {
      signalled_ = false;
      continue;
    }
    writerWaiting_ = true;
    wake_.expires_at(Clock::time_point::max());
    co_await wake_.async_wait(useTuple);
    writerWaiting_ = false;
    signalled_ = false;
  }
  writerDone_ = true;
  dead_ = true;
  cancelFn_(deadlineTarget_);  // ends the reader's wait
  writerEnded_.cancel();
}

template <class Stream>
awaitable<void> Session::run(Stream& io, Duration writeTimeout, Duration idleTimeout) {
  using Lowest = std::remove_reference_t<decltype(detail::lowestOf(io))>;
  writeTimeout_ = writeTimeout;
  idleTimeout_ = idleTimeout;
  deadlineTarget_ = &detail::lowestOf(io);
  setDeadlineFn_ = [](void* s, Clock::time_point t) { static_cast<Lowest*>(s)->expires_at(t); };
  clearDeadlineFn_ = [](void* s) { static_cast<Lowest*>(s)->expires_never(); };
  cancelFn_ = [](void* s) { static_cast<Lowest*>(s)->cancel(); };
  setDeadline(false);
  signal();
  asio::co_spawn(wake_.get_executor(), writer(io), asio::detached);
  // A TlsStream reads into the thread's buffer, and waits for readability without one; other
  // streams (and a TLS read that must not complete at once: an end of stream, an error, a write
  // first) read into a buffer of the connection's own, made on first use.
  std::unique_ptr<std::uint8_t[]> own;
  // Reads in a row without a wait: past a few, the reader lets the worker's other work run (this
  // connection's writer, its other connections), as a read that had to wait would.
  unsigned inARow = 0;
  // Whether a read right after the last one (no wait between) is worth trying: under load it
  // usually finds the caller's next frames and spares a wait; on a connection that sends one
  // request and then waits for its answer it finds nothing, and costs a read that says
  // EAGAIN. It follows what the last such read found; one in 16 is tried anyway, so that the
  // connection notices when its caller starts sending faster.
  bool readFirst = true;
  bool justWaited = false;
  unsigned skipped = 0;
  while (!dead_) {
    if (++inARow > 8) {
      inARow = 0;
      co_await asio::post(wake_.get_executor(), useTuple);
      if (dead_) {
        break;
      }
    }
    boost::system::error_code ec;
    const std::uint8_t* buf = nullptr;
    std::size_t n = 0;
    bool readNow = false;
    if constexpr (detail::ReadsWhenReadable<Stream>) {
      // Not tried, the read counts as wouldBlock: the wait comes first (it completes at once when
      // OpenSSL holds bytes already).
      const bool tryRead = justWaited || readFirst || ++skipped % 16 == 0;
      auto got = Stream::ReadNow::wouldBlock;
      if (tryRead) {
        got = io.read_some_now(asio::buffer(detail::threadReadBuffer(), detail::kReadSize), n);
        if (!justWaited && got != Stream::ReadNow::useAsync) {
          readFirst = got == Stream::ReadNow::data;
        }
      }
      justWaited = false;
      if (got == Stream::ReadNow::wouldBlock) {
        // After a read that said wouldBlock, OpenSSL holds part of a record at most: the wait is
        // for the socket alone.
        auto [wec] = co_await io.async_wait_readable(useTuple, tryRead);
        inARow = 0;
        justWaited = true;
        if (!wec) {
          continue;
        }
        ec = wec;
      }
      readNow = got == Stream::ReadNow::data;
      buf = detail::threadReadBuffer();
    }
    if (!ec && !readNow) {
      if (!own) {
        own = std::make_unique<std::uint8_t[]>(detail::kReadSize);
      }
      auto [rec, rn] =
          co_await io.async_read_some(asio::buffer(own.get(), detail::kReadSize), useTuple);
      ec = rec;
      n = rn;
      buf = own.get();
    }
    if (ec == boost::beast::error::timeout && ends_.empty() && !dead_) {
      goAway();  // idle: a GOAWAY says no stream was lost, then the close
      break;
    }
    if (ec || dead_) {
      break;
    }
    const auto used = nghttp2_session_mem_recv(ng_, buf, n);
    if (used < 0) {
      // A protocol error nghttp2 cannot answer with a GOAWAY of its own (a bad preface, a
      // flood it detected): it has queued what it could; the writer sends it and stops.
      nghttp2_session_terminate_session(ng_, NGHTTP2_PROTOCOL_ERROR);
      counters_.flood = counters_.flood || used == NGHTTP2_ERR_FLOODED;
      signal();
      break;
    }
    setDeadline(false);
    signal();
    if (nghttp2_session_want_read(ng_) == 0 && nghttp2_session_want_write(ng_) == 0) {
      break;
    }
  }
  readerDone_ = true;
  signal();
  // The writer flushes what is queued (a GOAWAY, the last answers) within its deadline.
  if (!writerDone_) {
    writerEnded_.expires_at(Clock::time_point::max());
    co_await writerEnded_.async_wait(useTuple);
  }
  closeAll();
}

}  // namespace sidecar::h2
