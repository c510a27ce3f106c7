// The zookeeper_mt session: async calls whose completions hop to our io_context, and the one
// place that translates the C client's numbers into our types.
#include "zk_session.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <zookeeper/zookeeper.h>

#include <array>
#include <boost/asio/post.hpp>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <utility>

#include "detail/zk_codes.h"

namespace registry {

std::string_view zkStateName(ZkState s) {
  switch (s) {
    case ZkState::Connecting:
      return "connecting";
    case ZkState::Connected:
      return "connected";
    case ZkState::Expired:
      return "expired";
    case ZkState::AuthFailed:
      return "auth_failed";
    case ZkState::Closed:
      return "closed";
  }
  return "closed";
}

std::string_view zkErrorName(ZkError e) {
  switch (e) {
    case ZkError::Ok:
      return "ok";
    case ZkError::ConnectionLoss:
      return "connection loss";
    case ZkError::OperationTimeout:
      return "operation timeout";
    case ZkError::SessionExpired:
      return "session expired";
    case ZkError::SessionMoved:
      return "session moved";
    case ZkError::NoAuth:
      return "not authenticated";
    case ZkError::BadArguments:
      return "bad arguments";
    case ZkError::InvalidAcl:
      return "invalid acl";
    case ZkError::NoNode:
      return "no node";
    case ZkError::NodeExists:
      return "node exists";
    case ZkError::Other:
      return "other error";
  }
  return "other error";
}

bool retryable(ZkError e) {
  return e == ZkError::ConnectionLoss || e == ZkError::OperationTimeout ||
         e == ZkError::SessionExpired || e == ZkError::SessionMoved;
}

namespace detail {

ZkError zkErrorFromCode(int rc) {
  switch (rc) {
    case ZOK:
      return ZkError::Ok;
    case ZCONNECTIONLOSS:
      return ZkError::ConnectionLoss;
    // The server refused to do it now: as good as a timeout, try again later.
    case ZOPERATIONTIMEOUT:
    case ZTHROTTLEDOP:
      return ZkError::OperationTimeout;
    // The handle is expired (or its authentication failed): this session is finished either way.
    case ZSESSIONEXPIRED:
    case ZINVALIDSTATE:
      return ZkError::SessionExpired;
    case ZSESSIONMOVED:
      return ZkError::SessionMoved;
    case ZNOAUTH:
    case ZAUTHFAILED:
      return ZkError::NoAuth;
    case ZBADARGUMENTS:
      return ZkError::BadArguments;
    case ZINVALIDACL:
      return ZkError::InvalidAcl;
    case ZNONODE:
      return ZkError::NoNode;
    case ZNODEEXISTS:
      return ZkError::NodeExists;
    default:
      return ZkError::Other;
  }
}

ZkState zkStateFromCode(int state) {
  if (state == ZOO_CONNECTED_STATE || state == ZOO_READONLY_STATE) {
    return ZkState::Connected;
  }
  if (state == ZOO_EXPIRED_SESSION_STATE) {
    return ZkState::Expired;
  }
  if (state == ZOO_AUTH_FAILED_STATE) {
    return ZkState::AuthFailed;
  }
  return ZkState::Connecting;
}

ZkEvent zkEventFromCode(int type) {
  if (type == ZOO_CREATED_EVENT) {
    return ZkEvent::Created;
  }
  if (type == ZOO_DELETED_EVENT) {
    return ZkEvent::Deleted;
  }
  if (type == ZOO_CHANGED_EVENT) {
    return ZkEvent::DataChanged;
  }
  if (type == ZOO_CHILD_EVENT) {
    return ZkEvent::ChildrenChanged;
  }
  if (type == ZOO_NOTWATCHING_EVENT) {
    return ZkEvent::NotWatching;
  }
  return ZkEvent::Session;
}

ZkClientMessage parseZkClientMessage(std::string_view line) {
  ZkClientMessage m;
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r' || line.back() == ' ')) {
    line.remove_suffix(1);
  }
  std::string_view text = line;
  if (auto zoo = line.find(":ZOO_"); zoo != std::string_view::npos) {
    auto rest = line.substr(zoo + 5);
    const auto at = rest.find('@');
    const auto colon = rest.find(": ");
    if (at != std::string_view::npos && colon != std::string_view::npos && at < colon) {
      m.level = std::string(rest.substr(0, at));
      text = rest.substr(colon + 2);
    }
  }
  m.text = std::string(text);
  m.error = m.text;
  // "errno=111(Connection refused)": the words are what a person searches for.
  if (auto e = text.find("errno="); e != std::string_view::npos) {
    const auto open = text.find('(', e);
    const auto close = open == std::string_view::npos ? open : text.find(')', open);
    if (close != std::string_view::npos) {
      m.error = std::string(text.substr(open + 1, close - open - 1));
    }
    m.unreachable = true;
  } else if (text.starts_with("getaddrinfo") || text.find("resolve") != std::string_view::npos) {
    m.unreachable = true;  // a server name that does not resolve
  }
  return m;
}

}  // namespace detail

namespace {

// The C client's log lines, once per session through our logger: a server that cannot be reached
// is one `event=zk_unreachable` line at once and then at most one per kLinePeriod while it lasts
// (the client retries about 7 times a second, each retry an ERROR line of its own), and its
// reason is kept for /admin/announcer and `sidecar resolve`.
class ClientLog {
 public:
  static constexpr std::chrono::seconds kLinePeriod{30};

  explicit ClientLog(std::string servers) : servers_(std::move(servers)) {}

  // Runs on the C client's threads, and on ours inside zookeeper_init.
  void write(const char* line) {
    const auto m = detail::parseZkClientMessage(line ? line : "");
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard lock(mutex_);
    if (m.unreachable) {
      reason_ = m.error;
    }
    if (quiet_) {
      return;  // zookeeper_init failed: the caller reports it, with reason()
    }
    auto& gate = m.unreachable ? unreachableLine_ : otherLine_;
    if (gate.written && now - gate.at < kLinePeriod) {
      ++gate.suppressed;
      return;
    }
    const auto suppressed = std::exchange(gate.suppressed, 0);
    const std::string tail = suppressed ? " suppressed=" + std::to_string(suppressed) : "";
    if (m.unreachable) {
      spdlog::warn("event=zk_unreachable servers={} error=\"{}\"{}", servers_, m.error, tail);
    } else {
      spdlog::warn("event=zk_client servers={} level={} message=\"{}\"{}", servers_,
                   m.level.empty() ? "unknown" : m.level, m.text, tail);
    }
    gate.written = true;
    gate.at = now;
  }
  // A server answered: the next failure is news again.
  void connected() {
    std::lock_guard lock(mutex_);
    reason_.clear();
    unreachableLine_ = {};
  }
  void setQuiet(bool quiet) {
    std::lock_guard lock(mutex_);
    quiet_ = quiet;
  }
  std::string reason() const {
    std::lock_guard lock(mutex_);
    return reason_;
  }

 private:
  struct Gate {
    bool written = false;
    std::chrono::steady_clock::time_point at{};
    uint64_t suppressed = 0;
  };
  const std::string servers_;
  mutable std::mutex mutex_;
  std::string reason_;
  Gate unreachableLine_;
  Gate otherLine_;
  bool quiet_ = false;
};

// The C client's log callback takes the line only, no context: each live session holds one of
// these slots, whose function finds its ClientLog. Past kLogSlots sessions at once (never seen:
// one per ensemble), a session shares the unnamed log.
constexpr std::size_t kLogSlots = 64;
std::mutex logSlotsMutex;
std::array<std::shared_ptr<ClientLog>, kLogSlots> logSlots;

ClientLog& unnamedLog() {
  static ClientLog log("unknown");
  return log;
}

void unnamedCallback(const char* line) { unnamedLog().write(line); }

template <std::size_t I>
void slotCallback(const char* line) {
  std::shared_ptr<ClientLog> log;
  {
    std::lock_guard lock(logSlotsMutex);
    log = logSlots[I];
  }
  (log ? *log : unnamedLog()).write(line);
}

template <std::size_t... I>
constexpr std::array<log_callback_fn, kLogSlots> makeSlotCallbacks(std::index_sequence<I...>) {
  return {&slotCallback<I>...};
}
constexpr auto kSlotCallbacks = makeSlotCallbacks(std::make_index_sequence<kLogSlots>{});

// A slot for log, or kLogSlots when none is free.
std::size_t takeLogSlot(std::shared_ptr<ClientLog> log) {
  std::lock_guard lock(logSlotsMutex);
  for (std::size_t i = 0; i < kLogSlots; ++i) {
    if (!logSlots[i]) {
      logSlots[i] = std::move(log);
      return i;
    }
  }
  return kLogSlots;
}

void releaseLogSlot(std::size_t slot) {
  if (slot < kLogSlots) {
    std::lock_guard lock(logSlotsMutex);
    logSlots[slot].reset();
  }
}

using detail::zkErrorFromCode;

// Runs on the C client's threads: translate, and name a code we do not know by its number, which
// ZkError::Other would otherwise hide. ZCLOSING is ours: we closed the handle.
ZkError translate(int rc) {
  ZkError e = zkErrorFromCode(rc);
  if (e == ZkError::Other && rc != ZCLOSING) {
    spdlog::warn("event=zk_unexpected_result rc={} error=\"{}\"", rc, zerror(rc));
  }
  return e;
}

class ZkSessionImpl;

// What the C client's threads may touch: the io_context to post to, and whether the session
// object still exists (completions after it died are dropped).
struct Shared {
  boost::asio::io_context* ioc;
  std::mutex mutex;
  ZkSessionImpl* owner;  // null once the session is destroyed
  ZkSession::EventHandler onEvent;
  std::shared_ptr<ClientLog> log;
};

using SharedPtr = std::shared_ptr<Shared>;

// Runs f(session) on the io_context, unless the session is gone by then.
template <class F>
void postTo(const SharedPtr& shared, F f) {
  boost::asio::post(*shared->ioc, [shared, f = std::move(f)]() mutable {
    std::unique_lock lock(shared->mutex);
    ZkSessionImpl* owner = shared->owner;
    lock.unlock();
    if (owner) {
      f(*owner);
    }
  });
}

// The context of one pending C call: a reference on Shared and the completion.
template <class Fn>
struct Call {
  SharedPtr shared;
  Fn done;
  template <class... A>
  void finish(int rc, A... args) {
    postTo(shared, [done = std::move(done), e = translate(rc), args...](ZkSessionImpl&) mutable {
      done(e, args...);
    });
  }
};

// Starts a C call with a heap Call as its context; if the C client refuses at once, the
// completion still runs, on the io_context, with that code.
template <class Fn, class Start, class... Fallback>
void launch(const SharedPtr& shared, Fn done, Start start, Fallback... fallback) {
  auto* call = new Call<Fn>{shared, std::move(done)};
  int rc = start(call);
  if (rc != ZOK) {
    call->finish(rc, fallback...);
    delete call;
  }
}

class ZkSessionImpl final : public ZkSession {
 public:
  ZkSessionImpl(boost::asio::io_context& ioc, const ZkSessionOptions& options,
                EventHandler onEvent);
  ~ZkSessionImpl() override;
  ZkSessionImpl(const ZkSessionImpl&) = delete;
  ZkSessionImpl& operator=(const ZkSessionImpl&) = delete;

  // ZkSession
  ZkState state() const override { return state_; }
  int64_t sessionId() const override;
  std::string connectedServer() const override;
  std::string unreachableReason() const override { return shared_->log->reason(); }
  void create(const std::string& path, const std::string& data, ZkNodeKind kind,
              std::function<void(ZkError, std::string)> done) override;
  void remove(const std::string& path, std::function<void(ZkError)> done) override;
  void exists(const std::string& path, bool watch,
              std::function<void(ZkError, ZkStat)> done) override;
  void get(const std::string& path, bool watch,
           std::function<void(ZkError, std::string)> done) override;
  void children(const std::string& path, bool watch,
                std::function<void(ZkError, std::vector<std::string>)> done) override;
  void children2(const std::string& path, bool watch,
                 std::function<void(ZkError, std::vector<std::string>, ZkStat)> done) override;
  void removeWatches(const std::string& path) override;

 private:
  static void onWatch(zhandle_t*, int type, int state, const char* path, void* context);

  SharedPtr shared_;
  zhandle_t* zh_ = nullptr;
  std::size_t logSlot_ = kLogSlots;
  ZkState state_ = ZkState::Connecting;
  bool secured_ = false;
  bool secureParents_ = false;
};

ZkStat statOf(const Stat* s) {
  return s ? ZkStat{s->ephemeralOwner, s->cversion, s->pzxid, s->numChildren} : ZkStat{};
}

std::vector<std::string> namesOf(const String_vector* strings) {
  std::vector<std::string> names;
  names.reserve(strings ? static_cast<std::size_t>(strings->count) : 0);
  for (int i = 0; strings && i < strings->count; ++i) {
    names.emplace_back(strings->data[i]);
  }
  return names;
}

ZkSessionImpl::ZkSessionImpl(boost::asio::io_context& ioc, const ZkSessionOptions& options,
                             EventHandler onEvent)
    : shared_(std::make_shared<Shared>()) {
  shared_->ioc = &ioc;
  shared_->owner = this;
  shared_->onEvent = std::move(onEvent);
  static std::once_flag quiet;
  std::call_once(quiet, [] { zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR); });
  shared_->log = std::make_shared<ClientLog>(options.connect);
  logSlot_ = takeLogSlot(shared_->log);
  // The watcher context holds its own reference; released when the handle is closed.
  auto* ctx = new SharedPtr(shared_);
  shared_->log->setQuiet(true);  // a failure here is the exception's to report
  zh_ = zookeeper_init2(options.connect.c_str(), &ZkSessionImpl::onWatch,
                        static_cast<int>(options.timeout.count()), nullptr, ctx, 0,
                        logSlot_ < kLogSlots ? kSlotCallbacks[logSlot_] : &unnamedCallback);
  shared_->log->setQuiet(false);
  if (!zh_) {
    delete ctx;
    releaseLogSlot(logSlot_);
    const auto why = shared_->log->reason();
    throw std::runtime_error("cannot start a ZooKeeper client for '" + options.connect + "'" +
                             (why.empty() ? std::string() : ": " + why));
  }
  if (!options.digest.empty()) {
    secured_ = true;
    secureParents_ = options.secureParents;
    zoo_add_auth(zh_, "digest", options.digest.data(), static_cast<int>(options.digest.size()),
                 nullptr, nullptr);
  }
}

void ZkSessionImpl::onWatch(zhandle_t*, int type, int state, const char* path, void* context) {
  auto shared = *static_cast<SharedPtr*>(context);
  const ZkEvent event = detail::zkEventFromCode(type);
  const ZkState s = detail::zkStateFromCode(state);
  if (event == ZkEvent::Session && s == ZkState::Connected) {
    shared->log->connected();
  }
  postTo(shared, [event, s, p = std::string(path ? path : ""), shared](ZkSessionImpl& self) {
    if (event == ZkEvent::Session) {
      self.state_ = s;
    }
    shared->onEvent(event, s, p);
  });
}

ZkSessionImpl::~ZkSessionImpl() {
  {
    std::lock_guard lock(shared_->mutex);
    shared_->owner = nullptr;
  }
  auto* ctx = static_cast<SharedPtr*>(const_cast<void*>(zoo_get_context(zh_)));
  zookeeper_close(zh_);  // also ends the session on the server, removing ephemeral nodes
  delete ctx;
  releaseLogSlot(logSlot_);  // the client's threads are gone: nothing logs through it now
}

int64_t ZkSessionImpl::sessionId() const {
  const clientid_t* id = zoo_client_id(zh_);
  return id ? id->client_id : 0;
}

std::string ZkSessionImpl::connectedServer() const {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  if (!zookeeper_get_connected_host(zh_, reinterpret_cast<sockaddr*>(&addr), &len)) {
    return {};
  }
  char host[INET6_ADDRSTRLEN] = {};
  uint16_t port = 0;
  if (addr.ss_family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&addr);
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
    port = ntohs(a->sin_port);
  } else if (addr.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
    port = ntohs(a->sin6_port);
  } else {
    return {};
  }
  return std::string(host) + ":" + std::to_string(port);
}

void ZkSessionImpl::create(const std::string& path, const std::string& data, ZkNodeKind kind,
                           std::function<void(ZkError, std::string)> done) {
  // With credentials: the world may read, only the creator may change (Finagle's secure ACL),
  // for our own members always and for parents only when asked (secureParents).
  static ACL secured[] = {
      {ZOO_PERM_READ, {const_cast<char*>("world"), const_cast<char*>("anyone")}},
      {ZOO_PERM_ALL, {const_cast<char*>("auth"), const_cast<char*>("")}}};
  static ACL_vector securedAcl{2, secured};
  using C = Call<decltype(done)>;
  launch(
      shared_, std::move(done),
      [&](C* call) {
        return zoo_acreate(
            zh_, path.c_str(), data.data(), static_cast<int>(data.size()),
            secured_ && (kind == ZkNodeKind::EphemeralSequential || secureParents_)
                ? &securedAcl
                : &ZOO_OPEN_ACL_UNSAFE,
            kind == ZkNodeKind::EphemeralSequential ? ZOO_EPHEMERAL_SEQUENTIAL : ZOO_PERSISTENT,
            [](int rc, const char* value, const void* ctx) {
              auto* c = static_cast<C*>(const_cast<void*>(ctx));
              c->finish(rc, std::string(value ? value : ""));
              delete c;
            },
            call);
      },
      std::string{});
}

void ZkSessionImpl::remove(const std::string& path, std::function<void(ZkError)> done) {
  using C = Call<decltype(done)>;
  launch(shared_, std::move(done), [&](C* call) {
    return zoo_adelete(
        zh_, path.c_str(), -1,
        [](int rc, const void* ctx) {
          auto* c = static_cast<C*>(const_cast<void*>(ctx));
          c->finish(rc);
          delete c;
        },
        call);
  });
}

void ZkSessionImpl::exists(const std::string& path, bool watch,
                           std::function<void(ZkError, ZkStat)> done) {
  using C = Call<decltype(done)>;
  launch(
      shared_, std::move(done),
      [&](C* call) {
        return zoo_aexists(
            zh_, path.c_str(), watch ? 1 : 0,
            [](int rc, const Stat* stat, const void* ctx) {
              auto* c = static_cast<C*>(const_cast<void*>(ctx));
              c->finish(rc, statOf(stat));
              delete c;
            },
            call);
      },
      ZkStat{});
}

void ZkSessionImpl::get(const std::string& path, bool watch,
                        std::function<void(ZkError, std::string)> done) {
  using C = Call<decltype(done)>;
  launch(
      shared_, std::move(done),
      [&](C* call) {
        return zoo_aget(
            zh_, path.c_str(), watch ? 1 : 0,
            [](int rc, const char* value, int len, const Stat*, const void* ctx) {
              auto* c = static_cast<C*>(const_cast<void*>(ctx));
              c->finish(rc,
                        value && len > 0 ? std::string(value, static_cast<std::size_t>(len)) : "");
              delete c;
            },
            call);
      },
      std::string{});
}

void ZkSessionImpl::children(const std::string& path, bool watch,
                             std::function<void(ZkError, std::vector<std::string>)> done) {
  using C = Call<decltype(done)>;
  launch(
      shared_, std::move(done),
      [&](C* call) {
        return zoo_aget_children(
            zh_, path.c_str(), watch ? 1 : 0,
            [](int rc, const String_vector* strings, const void* ctx) {
              auto* c = static_cast<C*>(const_cast<void*>(ctx));
              c->finish(rc, namesOf(strings));
              delete c;
            },
            call);
      },
      std::vector<std::string>{});
}

void ZkSessionImpl::children2(const std::string& path, bool watch,
                              std::function<void(ZkError, std::vector<std::string>, ZkStat)> done) {
  using C = Call<decltype(done)>;
  launch(
      shared_, std::move(done),
      [&](C* call) {
        return zoo_aget_children2(
            zh_, path.c_str(), watch ? 1 : 0,
            [](int rc, const String_vector* strings, const Stat* stat, const void* ctx) {
              auto* c = static_cast<C*>(const_cast<void*>(ctx));
              c->finish(rc, namesOf(strings), statOf(stat));
              delete c;
            },
            call);
      },
      std::vector<std::string>{}, ZkStat{});
}

void ZkSessionImpl::removeWatches(const std::string&) {
  // Left on the server. Debian 12's client (3.8.0) has zoo_aremove_watches, but removing the
  // default watcher's watch on a path that does not exist (a route without serverset) crashed
  // the sidecar (a null mutex in the client, with local=1) or aborted it (local=0), as did
  // zoo_aremove_all_watches. A watch left behind fires at most once (never, for a path never
  // created) and goes with the session; when it fires, SharedZkSessions finds no reader watching
  // the path and drops the event on the control thread: a post and a lookup, nothing more.
}

}  // namespace

std::unique_ptr<ZkSession> openZkSession(boost::asio::io_context& ioc,
                                         const ZkSessionOptions& options,
                                         ZkSession::EventHandler onEvent) {
  return std::make_unique<ZkSessionImpl>(ioc, options, std::move(onEvent));
}

}  // namespace registry
