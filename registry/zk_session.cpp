// zookeeper_mt wrapper: async calls whose completions hop to our io_context.
#include "zk_session.h"

#include <boost/asio/post.hpp>

#include <zookeeper/zookeeper.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <mutex>
#include <stdexcept>

namespace registry {

const int ZkCode::Ok = ZOK;
const int ZkCode::NoNode = ZNONODE;
const int ZkCode::NodeExists = ZNODEEXISTS;
const int ZkCode::NoAuth = ZNOAUTH;
const int ZkCode::ConnectionLoss = ZCONNECTIONLOSS;
const int ZkCode::OperationTimeout = ZOPERATIONTIMEOUT;
const int ZkCode::SessionExpired = ZSESSIONEXPIRED;
const int ZkCode::SessionMoved = ZSESSIONMOVED;
const int ZkCode::Closing = ZCLOSING;
const int ZkCode::BadArguments = ZBADARGUMENTS;
const int ZkCode::NotEmpty = ZNOTEMPTY;
const int ZkCode::InvalidAcl = ZINVALIDACL;

bool ZkCode::retryable(int rc) {
  return rc == ZCONNECTIONLOSS || rc == ZOPERATIONTIMEOUT || rc == ZSESSIONEXPIRED ||
         rc == ZSESSIONMOVED || rc == ZCLOSING;
}

std::string zkError(int rc) { return zerror(rc); }

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

// What the C client's threads may touch: the io_context to post to, and whether the session
// object still exists (completions after it died are dropped).
struct ZkSession::Shared {
  boost::asio::io_context* ioc;
  std::mutex mutex;
  ZkSession* owner;  // null once the session is destroyed
  EventHandler onEvent;
};

namespace {

using SharedPtr = std::shared_ptr<ZkSession::Shared>;

// Runs f(session) on the io_context, unless the session is gone by then.
template <class F>
void postTo(const SharedPtr& shared, F f) {
  boost::asio::post(*shared->ioc, [shared, f = std::move(f)]() mutable {
    std::unique_lock lock(shared->mutex);
    ZkSession* owner = shared->owner;
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
  void finish(A... args) {
    postTo(shared, [done = std::move(done), args...](ZkSession&) mutable { done(args...); });
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

}  // namespace

namespace {

ZkStat statOf(const Stat* s) { return s ? ZkStat{s->ephemeralOwner, s->version} : ZkStat{}; }

ZkState stateOf(int state) {
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

}  // namespace

ZkSession::ZkSession(boost::asio::io_context& ioc, const std::string& connect,
                     std::chrono::milliseconds timeout, const std::string& digest,
                     EventHandler onEvent)
    : ioc_(ioc), shared_(std::make_shared<Shared>()) {
  shared_->ioc = &ioc;
  shared_->owner = this;
  shared_->onEvent = std::move(onEvent);
  static std::once_flag quiet;
  std::call_once(quiet, [] { zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR); });
  // The watcher context holds its own reference; released when the handle is closed.
  auto* ctx = new SharedPtr(shared_);
  zh_ = zookeeper_init(
      connect.c_str(),
      [](zhandle_t*, int type, int state, const char* path, void* context) {
        auto shared = *static_cast<SharedPtr*>(context);
        std::string p = path ? path : "";
        ZkState s = stateOf(state);
        postTo(shared, [type, s, p, shared](ZkSession& self) {
          if (type == ZOO_SESSION_EVENT) {
            self.state_ = s;
          }
          shared->onEvent(type, s, p);
        });
      },
      static_cast<int>(timeout.count()), nullptr, ctx, 0);
  if (!zh_) {
    delete ctx;
    throw std::runtime_error("cannot start a ZooKeeper client for '" + connect + "'");
  }
  if (!digest.empty()) {
    secured_ = true;
    zoo_add_auth(zh_, "digest", digest.data(), static_cast<int>(digest.size()), nullptr, nullptr);
  }
}

ZkSession::~ZkSession() {
  {
    std::lock_guard lock(shared_->mutex);
    shared_->owner = nullptr;
  }
  if (zh_) {
    auto* ctx = static_cast<SharedPtr*>(const_cast<void*>(zoo_get_context(zh_)));
    zookeeper_close(zh_);  // also ends the session on the server, removing ephemeral nodes
    delete ctx;
  }
}

int64_t ZkSession::sessionId() const {
  const clientid_t* id = zoo_client_id(zh_);
  return id ? id->client_id : 0;
}

std::string ZkSession::connectedServer() const {
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

void ZkSession::create(const std::string& path, const std::string& data, bool ephemeralSequential,
                       std::function<void(int, std::string)> done) {
  // With credentials: the world may read, only the creator may change (Finagle's secure ACL).
  static ACL secured[] = {{ZOO_PERM_READ, {const_cast<char*>("world"), const_cast<char*>("anyone")}},
                          {ZOO_PERM_ALL, {const_cast<char*>("auth"), const_cast<char*>("")}}};
  static ACL_vector securedAcl{2, secured};
  using C = Call<decltype(done)>;
  launch(shared_, std::move(done), [&](C* call) {
    return zoo_acreate(
        zh_, path.c_str(), data.data(), static_cast<int>(data.size()),
        secured_ ? &securedAcl : &ZOO_OPEN_ACL_UNSAFE,
        ephemeralSequential ? ZOO_EPHEMERAL_SEQUENTIAL : ZOO_PERSISTENT,
        [](int rc, const char* value, const void* ctx) {
          auto* c = static_cast<C*>(const_cast<void*>(ctx));
          c->finish(rc, std::string(value ? value : ""));
          delete c;
        },
        call);
  }, std::string{});
}

void ZkSession::remove(const std::string& path, std::function<void(int)> done) {
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

void ZkSession::exists(const std::string& path, bool watch, std::function<void(int, ZkStat)> done) {
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

void ZkSession::get(const std::string& path, bool watch,
                    std::function<void(int, std::string, ZkStat)> done) {
  using C = Call<decltype(done)>;
  launch(shared_, std::move(done), [&](C* call) {
    return zoo_aget(
        zh_, path.c_str(), watch ? 1 : 0,
        [](int rc, const char* value, int len, const Stat* stat, const void* ctx) {
          auto* c = static_cast<C*>(const_cast<void*>(ctx));
          c->finish(rc, value && len > 0 ? std::string(value, static_cast<std::size_t>(len)) : "",
                    statOf(stat));
          delete c;
        },
        call);
  }, std::string{}, ZkStat{});
}

void ZkSession::children(const std::string& path, bool watch,
                         std::function<void(int, std::vector<std::string>)> done) {
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

}  // namespace registry
