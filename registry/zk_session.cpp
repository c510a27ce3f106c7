// The zookeeper_mt session: async calls whose completions hop to our io_context, and the one
// place that translates the C client's numbers into our types.
#include "zk_session.h"

#include "detail/zk_codes.h"

#include <boost/asio/post.hpp>

#include <spdlog/spdlog.h>

#include <zookeeper/zookeeper.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <mutex>
#include <stdexcept>

namespace registry {

std::string_view zkStateName(ZkState s) {
  switch (s) {
    case ZkState::Connecting: return "connecting";
    case ZkState::Connected: return "connected";
    case ZkState::Expired: return "expired";
    case ZkState::AuthFailed: return "auth_failed";
    case ZkState::Closed: return "closed";
  }
  return "closed";
}

std::string_view zkErrorName(ZkError e) {
  switch (e) {
    case ZkError::Ok: return "ok";
    case ZkError::ConnectionLoss: return "connection loss";
    case ZkError::OperationTimeout: return "operation timeout";
    case ZkError::SessionExpired: return "session expired";
    case ZkError::SessionMoved: return "session moved";
    case ZkError::NoAuth: return "not authenticated";
    case ZkError::BadArguments: return "bad arguments";
    case ZkError::InvalidAcl: return "invalid acl";
    case ZkError::NoNode: return "no node";
    case ZkError::NodeExists: return "node exists";
    case ZkError::Other: return "other error";
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
    case ZOK: return ZkError::Ok;
    case ZCONNECTIONLOSS: return ZkError::ConnectionLoss;
    // The server refused to do it now: as good as a timeout, try again later.
    case ZOPERATIONTIMEOUT:
    case ZTHROTTLEDOP: return ZkError::OperationTimeout;
    // The handle is expired (or its authentication failed): this session is finished either way.
    case ZSESSIONEXPIRED:
    case ZINVALIDSTATE: return ZkError::SessionExpired;
    case ZSESSIONMOVED: return ZkError::SessionMoved;
    case ZNOAUTH:
    case ZAUTHFAILED: return ZkError::NoAuth;
    case ZBADARGUMENTS: return ZkError::BadArguments;
    case ZINVALIDACL: return ZkError::InvalidAcl;
    case ZNONODE: return ZkError::NoNode;
    case ZNODEEXISTS: return ZkError::NodeExists;
    default: return ZkError::Other;
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

}  // namespace detail

namespace {

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
  void create(const std::string& path, const std::string& data, ZkNodeKind kind,
              std::function<void(ZkError, std::string)> done) override;
  void remove(const std::string& path, std::function<void(ZkError)> done) override;
  void exists(const std::string& path, bool watch,
              std::function<void(ZkError, ZkStat)> done) override;
  void get(const std::string& path, bool watch,
           std::function<void(ZkError, std::string)> done) override;
  void children(const std::string& path, bool watch,
                std::function<void(ZkError, std::vector<std::string>)> done) override;
  void removeWatches(const std::string& path) override;

 private:
  static void onWatch(zhandle_t*, int type, int state, const char* path, void* context);

  SharedPtr shared_;
  zhandle_t* zh_ = nullptr;
  ZkState state_ = ZkState::Connecting;
  bool secured_ = false;
};

ZkStat statOf(const Stat* s) { return s ? ZkStat{s->ephemeralOwner} : ZkStat{}; }

ZkSessionImpl::ZkSessionImpl(boost::asio::io_context& ioc, const ZkSessionOptions& options,
                             EventHandler onEvent)
    : shared_(std::make_shared<Shared>()) {
  shared_->ioc = &ioc;
  shared_->owner = this;
  shared_->onEvent = std::move(onEvent);
  static std::once_flag quiet;
  std::call_once(quiet, [] { zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR); });
  // The watcher context holds its own reference; released when the handle is closed.
  auto* ctx = new SharedPtr(shared_);
  zh_ = zookeeper_init(options.connect.c_str(), &ZkSessionImpl::onWatch,
                       static_cast<int>(options.timeout.count()), nullptr, ctx, 0);
  if (!zh_) {
    delete ctx;
    throw std::runtime_error("cannot start a ZooKeeper client for '" + options.connect + "'");
  }
  if (!options.digest.empty()) {
    secured_ = true;
    zoo_add_auth(zh_, "digest", options.digest.data(), static_cast<int>(options.digest.size()),
                 nullptr, nullptr);
  }
}

void ZkSessionImpl::onWatch(zhandle_t*, int type, int state, const char* path, void* context) {
  auto shared = *static_cast<SharedPtr*>(context);
  const ZkEvent event = detail::zkEventFromCode(type);
  const ZkState s = detail::zkStateFromCode(state);
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
  // With credentials: the world may read, only the creator may change (Finagle's secure ACL).
  static ACL secured[] = {{ZOO_PERM_READ, {const_cast<char*>("world"), const_cast<char*>("anyone")}},
                          {ZOO_PERM_ALL, {const_cast<char*>("auth"), const_cast<char*>("")}}};
  static ACL_vector securedAcl{2, secured};
  using C = Call<decltype(done)>;
  launch(shared_, std::move(done), [&](C* call) {
    return zoo_acreate(
        zh_, path.c_str(), data.data(), static_cast<int>(data.size()),
        secured_ ? &securedAcl : &ZOO_OPEN_ACL_UNSAFE,
        kind == ZkNodeKind::EphemeralSequential ? ZOO_EPHEMERAL_SEQUENTIAL : ZOO_PERSISTENT,
        [](int rc, const char* value, const void* ctx) {
          auto* c = static_cast<C*>(const_cast<void*>(ctx));
          c->finish(rc, std::string(value ? value : ""));
          delete c;
        },
        call);
  }, std::string{});
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
  launch(shared_, std::move(done), [&](C* call) {
    return zoo_aexists(
        zh_, path.c_str(), watch ? 1 : 0,
        [](int rc, const Stat* stat, const void* ctx) {
          auto* c = static_cast<C*>(const_cast<void*>(ctx));
          c->finish(rc, statOf(stat));
          delete c;
        },
        call);
  }, ZkStat{});
}

void ZkSessionImpl::get(const std::string& path, bool watch,
                        std::function<void(ZkError, std::string)> done) {
  using C = Call<decltype(done)>;
  launch(shared_, std::move(done), [&](C* call) {
    return zoo_aget(
        zh_, path.c_str(), watch ? 1 : 0,
        [](int rc, const char* value, int len, const Stat*, const void* ctx) {
          auto* c = static_cast<C*>(const_cast<void*>(ctx));
          c->finish(rc, value && len > 0 ? std::string(value, static_cast<std::size_t>(len)) : "");
          delete c;
        },
        call);
  }, std::string{});
}

void ZkSessionImpl::children(const std::string& path, bool watch,
                             std::function<void(ZkError, std::vector<std::string>)> done) {
  using C = Call<decltype(done)>;
  launch(shared_, std::move(done), [&](C* call) {
    return zoo_aget_children(
        zh_, path.c_str(), watch ? 1 : 0,
        [](int rc, const String_vector* strings, const void* ctx) {
          auto* c = static_cast<C*>(const_cast<void*>(ctx));
          std::vector<std::string> names;
          for (int i = 0; strings && i < strings->count; ++i) {
            names.emplace_back(strings->data[i]);
          }
          c->finish(rc, std::move(names));
          delete c;
        },
        call);
  }, std::vector<std::string>{});
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
