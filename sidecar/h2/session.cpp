// nghttp2's callbacks, dispatched to the streams' ends; the connection's settings and bounds.
#include "h2/session.h"

#include <algorithm>
#include <array>

#include "core/alloc_cache.h"

namespace sidecar::h2 {

namespace {

StreamEnd* endFor(nghttp2_session* ng, std::int32_t id) {
  return static_cast<StreamEnd*>(nghttp2_session_get_stream_user_data(ng, id));
}

// nghttp2 copies what it is given before the submit returns: one vector per thread serves every
// head, with no allocation once it has grown.
const std::vector<nghttp2_nv>& nvOf(const Fields& fields) {
  thread_local std::vector<nghttp2_nv> nv;
  nv.clear();
  for (const auto& f : fields) {
    nv.push_back({reinterpret_cast<std::uint8_t*>(const_cast<char*>(f.name.data())),
                  reinterpret_cast<std::uint8_t*>(const_cast<char*>(f.value.data())), f.name.size(),
                  f.value.size(), NGHTTP2_NV_FLAG_NONE});
  }
  return nv;
}

}  // namespace

struct Session::Callbacks {
  static Session& self(void* user) { return *static_cast<Session*>(user); }

  // nghttp2's data source for every body we send.
  static ssize_t readBody(nghttp2_session*, std::int32_t id, std::uint8_t* buf, std::size_t length,
                          std::uint32_t* flags, nghttp2_data_source*, void* user) {
    StreamEnd* end = self(user).endOf(id);
    if (!end) {
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // its owner is gone: the stream is reset
    }
    return end->readBody(buf, length, flags);
  }
  static nghttp2_data_provider bodyProvider() {
    nghttp2_data_provider p{};
    p.read_callback = &readBody;
    return p;
  }

  // A request's HEADERS that will never go out (cancelled, or the connection is going away):
  // nothing of it was sent, its stream is refused.
  static int frameNotSent(nghttp2_session* ng, const nghttp2_frame* frame, int, void* user) {
    auto& s = self(user);
    if (frame->hd.type != NGHTTP2_HEADERS || s.role_ != Role::client) {
      return 0;
    }
    // nghttp2 may have opened the stream before it gave up on it, and close it later: it must
    // find no end there, whatever becomes of this one.
    nghttp2_session_set_stream_user_data(ng, frame->hd.stream_id, nullptr);
    auto it = s.queued_.find(frame->hd.stream_id);
    if (it == s.queued_.end()) {
      return 0;
    }
    StreamEnd* end = it->second;
    s.queued_.erase(it);
    if (end && s.ends_.erase(end)) {
      end->closed(NGHTTP2_REFUSED_STREAM);
    }
    return 0;
  }

  static int beginHeaders(nghttp2_session* ng, const nghttp2_frame* frame, void* user) {
    auto& s = self(user);
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST ||
        s.role_ != Role::server) {
      return 0;
    }
    // A stream above the last id of a GOAWAY we queued is refused before it is dispatched:
    // nghttp2 would still open it until that GOAWAY is written, and then close it as refused,
    // after its request may have gone on (a caller would send it again, and it would run twice).
    StreamEnd* end = s.goawayLastId_ >= 0 && frame->hd.stream_id > s.goawayLastId_
                         ? nullptr
                         : s.streamOpened(frame->hd.stream_id);
    if (!end) {
      nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_REFUSED_STREAM);
      return 0;
    }
    nghttp2_session_set_stream_user_data(ng, frame->hd.stream_id, end);
    s.ends_.insert(end);
    s.idleUntil_ = {};  // a stream: the connection is not idle, whatever it is when it closes
    return 0;
  }

  static int header(nghttp2_session*, const nghttp2_frame* frame, const std::uint8_t* name,
                    std::size_t nameLen, const std::uint8_t* value, std::size_t valueLen,
                    std::uint8_t, void* user) {
    if (StreamEnd* end = self(user).endOf(frame->hd.stream_id)) {
      end->header({reinterpret_cast<const char*>(name), nameLen},
                  {reinterpret_cast<const char*>(value), valueLen});
    }
    return 0;
  }

  static int frameReceived(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    auto& s = self(user);
    const bool endStream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (frame->hd.type) {
      case NGHTTP2_HEADERS:
        if (StreamEnd* end = s.endOf(frame->hd.stream_id)) {
          end->headersEnd(endStream);
        }
        return 0;
      case NGHTTP2_DATA:
        if (endStream) {
          if (StreamEnd* end = s.endOf(frame->hd.stream_id)) {
            end->dataEnd();
          }
        } else if (frame->hd.length == 0) {
          s.countControl();
        }
        return 0;
      case NGHTTP2_PING:
      case NGHTTP2_SETTINGS:
        if ((frame->hd.flags & NGHTTP2_FLAG_ACK) == 0) {
          s.countControl();
        }
        return 0;
      case NGHTTP2_PRIORITY:
        s.countControl();
        return 0;
      case NGHTTP2_RST_STREAM:
        ++s.counters_.resetsReceived;
        return 0;
      case NGHTTP2_GOAWAY:
        ++s.counters_.goawayReceived;
        return 0;
      default:
        return 0;
    }
  }

  static int dataChunk(nghttp2_session* ng, std::uint8_t, std::int32_t id, const std::uint8_t* data,
                       std::size_t len, void* user) {
    // The connection's window at once; the stream's when its reader took the bytes.
    nghttp2_session_consume_connection(ng, len);
    if (StreamEnd* end = self(user).endOf(id)) {
      end->data(data, len);
    }
    return 0;
  }

  static int streamClosed(nghttp2_session* ng, std::int32_t id, std::uint32_t error, void* user) {
    auto& s = self(user);
    StreamEnd* end = s.endOf(id);
    s.queued_.erase(id);
    if (end) {
      nghttp2_session_set_stream_user_data(ng, id, nullptr);
      s.ends_.erase(end);
      end->closed(error);
    }
    s.setDeadline(false);
    return 0;
  }

  static int frameSent(nghttp2_session* ng, const nghttp2_frame* frame, void* user) {
    auto& s = self(user);
    if (frame->hd.type == NGHTTP2_HEADERS && s.role_ == Role::client &&
        frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
      const std::int32_t id = frame->hd.stream_id;
      auto it = s.queued_.find(id);
      StreamEnd* end = it == s.queued_.end() ? endFor(ng, id) : it->second;
      if (it != s.queued_.end()) {
        s.queued_.erase(it);
      }
      if (end) {
        end->headSent();
      } else {
        // Detached while queued: the stream just opened onto an end that is gone.
        nghttp2_session_set_stream_user_data(ng, id, nullptr);
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
      }
    } else if (s.role_ == Role::server && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
               (frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
               nghttp2_session_get_stream_remote_close(ng, frame->hd.stream_id) == 0) {
      // The answer went whole before the request ended: if nobody wants the rest of it, the
      // caller is asked to stop sending (RST_STREAM NO_ERROR, RFC 9113 8.1), rather than the
      // stream staying open while it does.
      StreamEnd* end = s.endOf(frame->hd.stream_id);
      if (end && end->answerEnded()) {
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
      }
    } else if (frame->hd.type == NGHTTP2_RST_STREAM) {
      ++s.counters_.resetsSent;
    } else if (frame->hd.type == NGHTTP2_GOAWAY) {
      ++s.counters_.goawaySent;
      s.counters_.lastGoawayCode = frame->goaway.error_code;
    }
    return 0;
  }
};

Session::Session(Role role, IoExecutor ex, const Settings& settings)
    : role_(role), settings_(settings), wake_(ex), writerEnded_(ex) {
  nghttp2_session_callbacks* cb = nullptr;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, &Callbacks::beginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(cb, &Callbacks::header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, &Callbacks::frameReceived);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, &Callbacks::dataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, &Callbacks::streamClosed);
  nghttp2_session_callbacks_set_on_frame_send_callback(cb, &Callbacks::frameSent);
  nghttp2_session_callbacks_set_on_frame_not_send_callback(cb, &Callbacks::frameNotSent);
  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  // A DATA frame is acknowledged once its reader took it (consume()), not when it arrived.
  nghttp2_option_set_no_auto_window_update(opt, 1);
  nghttp2_option_set_max_deflate_dynamic_table_size(opt, settings.headerTableSize);
  // Rapid reset (CVE-2023-44487): a burst of 1000 streams reset by the peer, then 33 a second;
  // beyond, the connection ends with a GOAWAY.
  nghttp2_option_set_stream_reset_rate_limit(opt, 1000, 33);
  // Unacknowledged SETTINGS and PING answers queued because the peer does not read: at most
  // this many, then the connection ends (a flood of frames that each ask for an answer).
  nghttp2_option_set_max_outbound_ack(opt, 1000);
  nghttp2_option_set_max_continuations(opt, 8);
  if (role == Role::client) {
    nghttp2_option_set_peer_max_concurrent_streams(opt, 100);
    nghttp2_session_client_new3(&ng_, cb, this, opt, alloc::nghttp2Mem());
  } else {
    nghttp2_session_server_new3(&ng_, cb, this, opt, alloc::nghttp2Mem());
  }
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cb);
  std::array<nghttp2_settings_entry, 5> entries{{
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, settings.maxConcurrentStreams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, settings.streamWindow},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, settings.maxHeaderList},
      {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, settings.headerTableSize},
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
  }};
  nghttp2_submit_settings(ng_, NGHTTP2_FLAG_NONE, entries.data(),
                          role == Role::client ? entries.size() : entries.size() - 1);
  nghttp2_session_set_local_window_size(ng_, NGHTTP2_FLAG_NONE, 0, settings.connectionWindow);
}

Session::~Session() {
  closeAll();
  nghttp2_session_del(ng_);
}

int Session::respond(std::int32_t id, const Fields& head, bool body) {
  const auto& nv = nvOf(head);
  const auto provider = Callbacks::bodyProvider();
  const int r = nghttp2_submit_response(ng_, id, nv.data(), nv.size(), body ? &provider : nullptr);
  signal();
  return r;
}

std::int32_t Session::request(const Fields& head, bool body, StreamEnd& end) {
  const auto& nv = nvOf(head);
  const auto provider = Callbacks::bodyProvider();
  const std::int32_t id =
      nghttp2_submit_request(ng_, nullptr, nv.data(), nv.size(), body ? &provider : nullptr, &end);
  if (id > 0) {
    ends_.insert(&end);
    idleUntil_ = {};
    queued_[id] = &end;
  }
  signal();
  return id;
}

int Session::trailers(std::int32_t id, const Fields& fields) {
  const auto& nv = nvOf(fields);
  const int r = nghttp2_submit_trailer(ng_, id, nv.data(), nv.size());
  signal();
  return r;
}

void Session::reset(std::int32_t id, std::uint32_t error) {
  nghttp2_submit_rst_stream(ng_, NGHTTP2_FLAG_NONE, id, error);
  signal();
}

void Session::resume(std::int32_t id) {
  nghttp2_session_resume_data(ng_, id);
  signal();
}

void Session::consume(std::int32_t id, std::size_t n) {
  if (n == 0) {
    return;
  }
  nghttp2_session_consume_stream(ng_, id, n);  // the connection's was acknowledged on arrival
  signal();
}

void Session::goAway(std::uint32_t error) {
  if (error == NGHTTP2_NO_ERROR) {
    // Graceful: nghttp2 takes no new stream, lets those in flight finish, and then wants
    // neither to read nor to write, which ends run().
    if (goawayLastId_ >= 0) {
      return;
    }
    goawayLastId_ = nghttp2_session_get_last_proc_stream_id(ng_);
    nghttp2_submit_goaway(ng_, NGHTTP2_FLAG_NONE, goawayLastId_, NGHTTP2_NO_ERROR, nullptr, 0);
  } else {
    nghttp2_session_terminate_session(ng_, error);
  }
  signal();
}

void Session::detach(std::int32_t id, StreamEnd& end, std::uint32_t error) {
  if (ends_.erase(&end) == 0) {
    return;
  }
  if (auto it = queued_.find(id); it != queued_.end()) {
    // Its HEADERS is still queued, the end in nghttp2's item: frameSent cuts the stream it opens
    // from the end and resets it; or the item is cancelled first and never sent.
    it->second = nullptr;
    nghttp2_submit_rst_stream(ng_, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
  } else if (endFor(ng_, id) == &end) {
    nghttp2_session_set_stream_user_data(ng_, id, nullptr);
    if (nghttp2_session_find_stream(ng_, id)) {
      nghttp2_submit_rst_stream(ng_, NGHTTP2_FLAG_NONE, id, error);
    }
  }
  signal();
}

bool Session::usable() const {
  constexpr std::int32_t kLastIds = 1 << 30;  // leave room: a new connection takes over
  if (idleUntil_ != Clock::time_point{} && Clock::now() >= idleUntil_) {
    return false;
  }
  return !dead_ && goawayLastId_ < 0 && nghttp2_session_want_read(ng_) != 0 &&
         nghttp2_session_check_request_allowed(ng_) != 0 &&
         nghttp2_session_get_next_stream_id(ng_) < static_cast<std::uint32_t>(kLastIds) * 2 - 1000;
}

void Session::signal() {
  signalled_ = true;
  if (writerWaiting_) {
    wake_.cancel();
  }
}

bool Session::collect(std::string& out) {
  out.clear();
  constexpr std::size_t kBatch = 64 * 1024;
  while (out.size() < kBatch) {
    const std::uint8_t* p = nullptr;
    const auto n = nghttp2_session_mem_send(ng_, &p);
    if (n < 0) {
      dead_ = true;
      return false;
    }
    if (n == 0) {
      break;
    }
    out.append(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
  }
  return true;
}

StreamEnd* Session::endOf(std::int32_t id) {
  if (!queued_.empty()) {
    if (auto it = queued_.find(id); it != queued_.end() && !it->second) {
      nghttp2_session_set_stream_user_data(ng_, id, nullptr);  // if nghttp2 opened it already
      return nullptr;
    }
  }
  return endFor(ng_, id);
}

bool Session::countControl() {
  const auto now = Clock::now();
  if (now - floodWindow_ > std::chrono::seconds(1)) {
    floodWindow_ = now;
    floodCount_ = 0;
  }
  if (++floodCount_ <= settings_.controlFramesPerSecond) {
    return true;
  }
  if (!counters_.flood) {
    counters_.flood = true;
    nghttp2_session_terminate_session(ng_, NGHTTP2_ENHANCE_YOUR_CALM);
    signal();
  }
  return false;
}

void Session::closeAll(std::uint32_t error) {
  auto ends = std::move(ends_);
  ends_.clear();
  for (auto& [id, end] : queued_) {
    if (end) {
      nghttp2_session_set_stream_user_data(ng_, id, nullptr);  // reaches an opened one only
    }
    end = nullptr;  // told below, through ends; nothing of it may be used after
  }
  for (StreamEnd* end : ends) {
    end->closed(error);
  }
}

std::uint32_t Session::peerMaxStreams() const {
  return nghttp2_session_get_remote_settings(ng_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
}

bool Session::takesRequests() const {
  return !dead_ && goawayLastId_ < 0 && nghttp2_session_check_request_allowed(ng_) != 0;
}

void Session::setDeadline(bool writing) {
  if (!setDeadlineFn_) {
    return;
  }
  if (writing) {
    writing_ = true;
    setDeadlineFn_(deadlineTarget_, Clock::now() + writeTimeout_);
    return;
  }
  if (writing_) {
    return;  // a write under way keeps its own deadline
  }
  if (ends_.empty()) {
    if (idleUntil_ == Clock::time_point{}) {
      idleUntil_ = Clock::now() + idleTimeout_;
    }
    setDeadlineFn_(deadlineTarget_, idleUntil_);
  } else {
    idleUntil_ = {};
    clearDeadlineFn_(deadlineTarget_);
  }
}

}  // namespace sidecar::h2
