// Lists member_ children with a watch, fetches new members' data, publishes the usable set.
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
  Endpoint endpoint = instance.serviceEndpoint;
  if (!address.endpoint.empty()) {
    auto it = std::find_if(instance.additionalEndpoints.begin(), instance.additionalEndpoints.end(),
                           [&](const auto& e) { return e.first == address.endpoint; });
    if (it == instance.additionalEndpoints.end()) {
      return std::nullopt;
    }
    endpoint = it->second;
  }
  return ResolvedMember{name, endpoint, instance.shard};
}

ServersetResolver::ServersetResolver(boost::asio::io_context& ioc, ServersetAddress address,
                                     std::chrono::milliseconds sessionTimeout, OnUpdate onUpdate)
    : ioc_(ioc),
      address_(std::move(address)),
      sessionTimeout_(sessionTimeout),
      onUpdate_(std::move(onUpdate)),
      retryTimer_(ioc),
      refreshTimer_(ioc) {}

void ServersetResolver::start() { openSession(); }

void ServersetResolver::openSession() {
  session_ = openZkSession(ioc_, {address_.connect, sessionTimeout_, ""},
                           [this](ZkEvent event, ZkState state, const std::string& path) {
                             onEvent(event, state, path);
                           });
}

void ServersetResolver::onEvent(ZkEvent event, ZkState state, const std::string&) {
  if (event == ZkEvent::Session) {
    if (state == ZkState::Connected) {
      refresh();
    } else if (state == ZkState::Expired) {
      retryTimer_.expires_after(std::chrono::seconds(1));
      retryTimer_.async_wait([this](auto ec) {
        if (!ec) {
          openSession();
        }
      });
    }
    return;
  }
  // The children changed, or the serverset path appeared.
  refresh();
}

void ServersetResolver::refresh() {
  const uint64_t generation = ++generation_;
  session_->children(address_.path, true, [this, generation](ZkError e,
                                                              std::vector<std::string> names) {
    if (generation != generation_) {
      return;
    }
    if (e == ZkError::NoNode) {
      // No serverset yet: watch for the path to appear; meanwhile it is empty.
      session_->exists(address_.path, true, [](ZkError, ZkStat) {});
      cache_.clear();
      return publish();
    }
    if (e != ZkError::Ok) {
      spdlog::warn("event=resolve_failed path={} error=\"{}\"", address_.path, zkErrorName(e));
      return;  // a reconnect brings a session event, and with it another refresh
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
                    [this, n, fetch, generation](ZkError e, std::string data) {
                      if (generation != generation_) {
                        return;
                      }
                      if (e != ZkError::Ok && e != ZkError::NoNode) {
                        ++fetch->failed;
                        fetch->lastError = e;
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
                      }
                      if (--fetch->pending != 0) {
                        return;
                      }
                      if (fetch->failed == 0) {
                        return publish();
                      }
                      // Keep the last good set; what was read is cached, so the next listing
                      // fetches only what failed.
                      spdlog::warn("event=resolve_incomplete path={} unread={} error=\"{}\"",
                                   address_.path, fetch->failed, zkErrorName(fetch->lastError));
                      refreshTimer_.expires_after(std::chrono::seconds(1));
                      refreshTimer_.async_wait([this, generation](auto ec) {
                        if (!ec && generation == generation_) {
                          refresh();
                        }
                      });
                    });
    }
  });
}

void ServersetResolver::publish() {
  ServersetSnapshot snapshot;
  for (const auto& [name, c] : cache_) {
    if (c.member) {
      snapshot.members.emplace(name, *c.member);
    } else if (!c.malformed.empty()) {
      snapshot.malformed.emplace(name, c.malformed);
    }
  }
  onUpdate_(snapshot);
}

}  // namespace registry
