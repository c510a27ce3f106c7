// Lists member_ children with a watch, fetches new members' data, publishes the usable set when
// every member was read.
#include "resolver.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace registry {

std::optional<ResolvedMember> selectMember(const std::string& name, const ServiceInstance& instance,
                                           const ServersetAddress& address) {
  if (instance.status != Status::Alive) {
    return std::nullopt;
  }
  if (address.shard && instance.shard != address.shard) {
    return std::nullopt;
  }
  if (address.endpoint.empty()) {
    // A member of named endpoints only offers nothing by default; Finagle skips it too.
    if (!instance.serviceEndpoint) {
      return std::nullopt;
    }
    return ResolvedMember{name, *instance.serviceEndpoint, instance.shard};
  }
  auto it = std::find_if(instance.additionalEndpoints.begin(), instance.additionalEndpoints.end(),
                         [&](const auto& e) { return e.first == address.endpoint; });
  if (it == instance.additionalEndpoints.end()) {
    return std::nullopt;
  }
  return ResolvedMember{name, it->second, instance.shard};
}

ServersetResolver::ServersetResolver(boost::asio::io_context& ioc, ServersetAddress address,
                                     std::chrono::milliseconds sessionTimeout, OnUpdate onUpdate)
    : ServersetResolver(ioc, std::move(address), ResolverOptions{sessionTimeout},
                        std::move(onUpdate)) {}

ServersetResolver::ServersetResolver(boost::asio::io_context& ioc, ServersetAddress address,
                                     ResolverOptions options, OnUpdate onUpdate, OnStale onStale)
    : address_(std::move(address)),
      options_(std::move(options)),
      onUpdate_(std::move(onUpdate)),
      onStale_(std::move(onStale)),
      reopenTimer_(ioc),
      refreshTimer_(ioc) {
  if (!options_.connect) {
    options_.connect = [&ioc](const ZkSessionOptions& o, ZkSession::EventHandler h) {
      return openZkSession(ioc, o, std::move(h));
    };
  }
}

// The timers go first (nothing they would run can run), then the session, whose completions are
// dropped once it is gone.
ServersetResolver::~ServersetResolver() = default;

void ServersetResolver::start() { openSession(); }

void ServersetResolver::openSession() {
  session_.reset();  // a new session, never a repaired one
  refreshTimer_.cancel();  // the new session lists when it connects
  try {
    session_ = options_.connect({address_.connect, options_.sessionTimeout, ""},
                                [this](ZkEvent event, ZkState state, const std::string& path) {
                                  onEvent(event, state, path);
                                });
  } catch (const std::exception& e) {
    spdlog::error("event=zk_session_failed path={} error=\"{}\"", address_.path, e.what());
    reopenTimer_.schedule(options_.retryDelay, [this] { openSession(); });
  }
}

void ServersetResolver::onEvent(ZkEvent event, ZkState state, const std::string&) {
  if (event != ZkEvent::Session) {
    return refresh();  // the children changed, or the serverset path appeared
  }
  switch (state) {
    case ZkState::Connected: return refresh();
    case ZkState::Connecting: return setStale(true, "disconnected");
    case ZkState::Expired:
      setStale(true, "session_expired");
      reopenTimer_.schedule(options_.retryDelay, [this] { openSession(); });
      return;
    case ZkState::AuthFailed: return setStale(true, "auth_failed");
    case ZkState::Closed: return;
  }
}

void ServersetResolver::refresh() {
  const uint64_t generation = ++generation_;
  refreshTimer_.cancel();  // this listing is the retry
  session_->children(address_.path, true, [this, generation](ZkError e,
                                                              std::vector<std::string> names) {
    if (generation != generation_) {
      return;
    }
    if (e == ZkError::NoNode) {
      // No serverset yet: it is empty, and a watch tells when the path appears. Made between the
      // two calls, it is there already: list again.
      session_->exists(address_.path, true, [this, generation](ZkError appeared, ZkStat) {
        if (generation == generation_ && appeared == ZkError::Ok) {
          refresh();
        }
      });
      cache_.clear();
      return publish();
    }
    if (e != ZkError::Ok) {
      return readFailed("resolve_failed", e, 0);
    }
    std::erase_if(names, [](const std::string& n) { return !n.starts_with("member_"); });
    std::map<std::string, Cached> next;
    std::vector<std::string> unknown;
    for (auto& n : names) {
      if (auto it = cache_.find(n); it != cache_.end()) {
        next.emplace(n, std::move(it->second));  // members are immutable once written
      } else {
        unknown.push_back(n);
      }
    }
    cache_ = std::move(next);
    if (unknown.empty()) {
      return publish();
    }
    // A set is published only when every member in the listing was read (or is gone): a member
    // that could not be read (connection loss, a timeout) would otherwise vanish from the set
    // for a moment, and a caller balancing over it would shift its traffic for nothing.
    struct Fetch {
      std::size_t pending;
      std::size_t failed = 0;
      ZkError lastError = ZkError::Ok;
    };
    auto fetch = std::make_shared<Fetch>(Fetch{unknown.size()});
    for (const auto& n : unknown) {
      session_->get(address_.path + "/" + n, false,
                    [this, n, fetch, generation](ZkError e, const std::string& data) {
                      if (generation != generation_) {
                        return;
                      }
                      if (e == ZkError::Ok) {
                        auto decoded = decodeServiceInstance(data);
                        Cached c;
                        if (decoded.instance) {
                          c.member = selectMember(n, *decoded.instance, address_);
                        } else {
                          c.malformed = decoded.error;
                        }
                        cache_[n] = std::move(c);
                      } else if (e != ZkError::NoNode) {
                        ++fetch->failed;
                        fetch->lastError = e;
                      }
                      if (--fetch->pending != 0) {
                        return;
                      }
                      if (fetch->failed == 0) {
                        return publish();
                      }
                      // Keep the last complete set; what was read is cached, so the next
                      // listing fetches only what failed.
                      readFailed("resolve_incomplete", fetch->lastError, fetch->failed);
                    });
    }
  });
}

void ServersetResolver::readFailed(const char* what, ZkError e, std::size_t unread) {
  if (unread > 0) {
    spdlog::warn("event={} path={} unread={} error=\"{}\"", what, address_.path, unread,
                 zkErrorName(e));
  } else {
    spdlog::warn("event={} path={} error=\"{}\"", what, address_.path, zkErrorName(e));
  }
  setStale(true, "");  // logged above
  // A lost connection or session ends in a session event, which lists again (after reconnecting,
  // or with a new session); retrying before then would only fail again.
  if (e == ZkError::ConnectionLoss || e == ZkError::SessionExpired) {
    return;
  }
  refreshTimer_.schedule(options_.retryDelay, [this] { refresh(); });
}

void ServersetResolver::publish() {
  auto snapshot = std::make_shared<ServersetSnapshot>();
  for (const auto& [name, c] : cache_) {
    if (c.member) {
      snapshot->members.emplace(name, *c.member);
    } else if (!c.malformed.empty()) {
      snapshot->malformed.emplace(name, c.malformed);
    }
  }
  const bool first = !snapshot_;
  snapshot_ = std::move(snapshot);
  onUpdate_(*snapshot_);
  // A listing that answered while the connection was already lost is complete, but it may
  // already be old: it stays stale until the session is back.
  if (session_->state() == ZkState::Connected) {
    setStale(false, first ? "" : "current");
  }
}

void ServersetResolver::setStale(bool stale, std::string_view reason) {
  if (stale_ == stale) {
    return;
  }
  stale_ = stale;
  // Logged only when a set was published before: the first one is the normal start, not news.
  if (snapshot_ && !reason.empty()) {
    if (stale) {
      spdlog::warn("event=resolve_stale path={} reason={} members={}", address_.path, reason,
                   snapshot_->members.size());
    } else {
      spdlog::info("event=resolve_current path={} members={}", address_.path,
                   snapshot_->members.size());
    }
  }
  if (onStale_) {
    onStale_(stale);
  }
}

}  // namespace registry
