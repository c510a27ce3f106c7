// Lists member_ children with a watch, fetches new members' data, publishes the usable set when
// every member was read.
#include "resolver.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>
#include <string_view>
#include <unordered_set>
#include <utility>

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
      onStale_(std::move(onStale)) {
  if (!options_.connect) {
    options_.connect = [&ioc](const ZkSessionOptions& o, ZkSession::EventHandler h) {
      return openZkSession(ioc, o, std::move(h));
    };
  }
  for (auto& connect : ensembles(address_.connect)) {
    ensembles_.push_back(std::make_unique<Ensemble>(ioc, std::move(connect)));
  }
}

ServersetResolver::~ServersetResolver() = default;

void ServersetResolver::start() {
  for (auto& e : ensembles_) {
    openSession(*e);
  }
}

std::string ServersetResolver::unreachableReason() const {
  std::string out;
  for (const auto& e : ensembles_) {
    auto why = e->session ? e->session->unreachableReason() : std::string();
    if (why.empty()) {
      continue;
    }
    if (ensembles_.size() == 1) {
      return why;
    }
    out += (out.empty() ? "" : "; ") + e->connect + ": " + why;
  }
  return out;
}

std::string ServersetResolver::unlisted() const {
  std::string out;
  for (const auto& e : ensembles_) {
    if (!e->listed) {
      out += (out.empty() ? "" : "#") + e->connect;
    }
  }
  return out;
}

std::string ServersetResolver::where(const Ensemble& e) const {
  return ensembles_.size() == 1 ? address_.path : address_.path + " zk=" + e.connect;
}

void ServersetResolver::openSession(Ensemble& en) {
  en.session.reset();        // a new session, never a repaired one
  en.refreshTimer.cancel();  // the new session lists when it connects
  en.coalesceTimer.cancel();
  // The old session's reads will never answer: their members are read again when listed.
  en.reading = 0;
  for (auto& [name, c] : en.cache) {
    c.reading = false;
  }
  try {
    en.session = options_.connect({en.connect, options_.sessionTimeout, ""},
                                  [this, &en](ZkEvent event, ZkState state, const std::string&) {
                                    onEvent(en, event, state);
                                  });
  } catch (const std::exception& ex) {
    spdlog::error("event=zk_session_failed path={} error=\"{}\"", where(en), ex.what());
    en.reopenTimer.schedule(options_.retryDelay, [this, &en] { openSession(en); });
  }
}

void ServersetResolver::onEvent(Ensemble& en, ZkEvent event, ZkState state) {
  if (event != ZkEvent::Session) {
    return changed(en);  // the children changed, or the serverset path appeared
  }
  switch (state) {
    case ZkState::Connected:
      return refresh(en);
    case ZkState::Connecting:
      return setStale(en, true, "disconnected");
    case ZkState::Expired:
      setStale(en, true, "session_expired");
      en.reopenTimer.schedule(options_.retryDelay, [this, &en] { openSession(en); });
      return;
    case ZkState::AuthFailed:
      return setStale(en, true, "auth_failed");
    case ZkState::Closed:
      return;
  }
}

void ServersetResolver::changed(Ensemble& en) {
  // The watch is ZooKeeper's one-shot: nothing more comes until the next listing sets it again,
  // so waiting gathers the changes meanwhile into that one listing.
  const auto due = en.listedAt + options_.coalesceWindow;
  const auto now = std::chrono::steady_clock::now();
  if (options_.coalesceWindow.count() <= 0 || now >= due) {
    return refresh(en);
  }
  en.coalesceTimer.schedule(std::chrono::ceil<std::chrono::milliseconds>(due - now),
                            [this, &en] { refresh(en); });
}

void ServersetResolver::refresh(Ensemble& en) {
  const uint64_t generation = ++en.generation;
  en.refreshTimer.cancel();  // this listing is the retry
  en.coalesceTimer.cancel();
  en.listedAt = std::chrono::steady_clock::now();
  en.session->children2(
      address_.path, true,
      [this, &en, generation](ZkError e, std::vector<std::string> names, ZkStat stat) {
        if (generation != en.generation) {
          return;
        }
        if (e == ZkError::NoNode) {
          // No serverset yet: it is empty, and a watch tells when the path appears. Made between
          // the two calls, it is there already: list again.
          en.session->exists(address_.path, true,
                             [this, &en, generation](ZkError appeared, ZkStat) {
                               if (generation == en.generation && appeared == ZkError::Ok) {
                                 refresh(en);
                               }
                             });
          en.cache.clear();
          en.listing = ZkStat{};
          return publish(en);
        }
        if (e != ZkError::Ok) {
          return readFailed(en, "resolve_failed", e, 0);
        }
        listed(en, std::move(names), stat);
      });
}

void ServersetResolver::listed(Ensemble& en, std::vector<std::string> names, ZkStat stat) {
  en.listing = stat;
  if (en.listed && en.reading == 0 && stat.pzxid >= 0 && stat.cversion == en.published.cversion &&
      stat.pzxid == en.published.pzxid) {
    // The list that was published, again (a reconnection, a replaced session, a retry): any
    // creation or deletion since would have moved cversion and pzxid. The same set: nothing to
    // read or publish; only current again.
    if (en.session->state() == ZkState::Connected) {
      setStale(en, false, "current");
    }
    return;
  }
  std::erase_if(names, [](const std::string& n) { return !n.starts_with("member_"); });
  // Updated in place (a listing of thousands changes a few): members no longer listed go, new
  // ones come; a known one is kept, read or being read, as members are immutable once written.
  {
    std::unordered_set<std::string_view> now(names.begin(), names.end());
    std::erase_if(en.cache, [&](const auto& kv) { return !now.contains(kv.first); });
  }
  for (auto& n : names) {
    en.cache.try_emplace(std::move(n));
  }
  en.readError = ZkError::Ok;
  for (auto& [name, c] : en.cache) {
    if (!c.read && !c.reading) {
      read(en, name);
    }
  }
  if (en.reading == 0) {
    readDone(en);
  }
}

void ServersetResolver::read(Ensemble& en, const std::string& name) {
  en.cache[name].reading = true;
  ++en.reading;
  // Whatever listing is current when it answers, what was read stays cached: a member is read
  // once however many listings come meanwhile.
  en.session->get(address_.path + "/" + name, false,
                  [this, &en, name](ZkError e, const std::string& data) {
                    --en.reading;
                    auto it = en.cache.find(name);
                    if (it != en.cache.end() && it->second.reading) {
                      auto& c = it->second;
                      c.reading = false;
                      if (e == ZkError::Ok) {
                        auto decoded = decodeServiceInstance(data);
                        if (decoded.instance) {
                          c.member = selectMember(name, *decoded.instance, address_);
                        } else {
                          c.malformed = decoded.error;
                        }
                        c.read = true;
                      } else if (e == ZkError::NoNode) {
                        c.read = true;  // gone since the listing: the next one leaves it out
                      } else {
                        en.readError = e;
                      }
                    }
                    if (en.reading == 0) {
                      readDone(en);
                    }
                  });
}

void ServersetResolver::readDone(Ensemble& en) {
  // A set is published only when every member in the listing was read (or is gone): a member
  // that could not be read (connection loss, a timeout) would otherwise vanish from the set for a
  // moment, and a caller balancing over it would shift its traffic for nothing.
  const auto unread = static_cast<std::size_t>(std::count_if(
      en.cache.begin(), en.cache.end(), [](const auto& kv) { return !kv.second.read; }));
  if (unread == 0) {
    return publish(en);
  }
  // Keep the last complete set; what was read is cached, so the next listing reads only what
  // failed.
  readFailed(en, "resolve_incomplete", en.readError, unread);
}

void ServersetResolver::readFailed(Ensemble& en, const char* what, ZkError e, std::size_t unread) {
  if (unread > 0) {
    spdlog::warn("event={} path={} unread={} error=\"{}\"", what, where(en), unread,
                 zkErrorName(e));
  } else {
    spdlog::warn("event={} path={} error=\"{}\"", what, where(en), zkErrorName(e));
  }
  setStale(en, true, "");  // logged above
  // A lost connection or session ends in a session event, which lists again (after reconnecting,
  // or with a new session); retrying before then would only fail again.
  if (e == ZkError::ConnectionLoss || e == ZkError::SessionExpired) {
    return;
  }
  en.refreshTimer.schedule(options_.retryDelay, [this, &en] { refresh(en); });
}

void ServersetResolver::publish(Ensemble& en) {
  const bool first = !en.listed;
  en.listed = true;
  en.published = en.listing;
  auto snapshot = std::make_shared<ServersetSnapshot>();
  const bool several = ensembles_.size() > 1;
  std::set<std::pair<std::string, uint16_t>> given;  // host:port already in the union
  for (const auto& e : ensembles_) {
    if (!e->listed) {
      ++snapshot->unlisted;
      continue;
    }
    for (const auto& [name, c] : e->cache) {
      if (!c.read) {
        continue;  // another ensemble's listing, still being read
      }
      const std::string key = several ? name + "@" + e->connect : name;
      if (c.member) {
        // The same host:port from two ensembles is one member (Finagle's union is a set of
        // addresses): a caller would otherwise send it twice the share.
        if (!several || given.emplace(c.member->endpoint.host, c.member->endpoint.port).second) {
          auto member = *c.member;
          member.name = key;
          snapshot->members.emplace(key, std::move(member));
        }
      } else if (!c.malformed.empty()) {
        snapshot->malformed.emplace(key, c.malformed);
      }
    }
  }
  snapshot_ = std::move(snapshot);
  onUpdate_(*snapshot_);
  // A listing that answered while the connection was already lost is complete, but it may
  // already be old: it stays stale until the session is back.
  if (en.session->state() == ZkState::Connected) {
    setStale(en, false, first ? "" : "current");
  }
}

void ServersetResolver::setStale(Ensemble& en, bool stale, std::string_view reason) {
  if (en.stale != stale) {
    en.stale = stale;
    // Logged only when a set was published before: the first one is the normal start, not news.
    if (en.listed && !reason.empty()) {
      const auto members = std::count_if(en.cache.begin(), en.cache.end(), [](const auto& kv) {
        return kv.second.member.has_value();
      });
      if (stale) {
        spdlog::warn("event=resolve_stale path={} reason={} members={}", where(en), reason,
                     members);
      } else {
        spdlog::info("event=resolve_current path={} members={}", where(en), members);
      }
    }
  }
  const bool any =
      std::any_of(ensembles_.begin(), ensembles_.end(), [](const auto& e) { return e->stale; });
  if (stale_ == any) {
    return;
  }
  stale_ = any;
  if (onStale_) {
    onStale_(any);
  }
}

}  // namespace registry
