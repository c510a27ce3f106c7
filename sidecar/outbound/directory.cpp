// Routes, their resolvers and what the admin interface shows of them.
#include "outbound/directory.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/json/array.hpp>
#include <boost/json/serialize.hpp>
#include <set>

#include "control/startup.h"
#include "outbound/aperture.h"

namespace sidecar {

RouteDirectory::RouteDirectory(boost::asio::io_context& control, const OutboundConfig& config,
                               Duration zkSessionTimeout, OutboundMetrics& metrics, Publish publish,
                               Retract retract, registry::ZkSessionFactory zk)
    : control_(control),
      config_(config),
      zkSessionTimeout_(zkSessionTimeout),
      metrics_(metrics),
      publish_(std::move(publish)),
      retract_(std::move(retract)),
      sessions_(control, std::move(zk)) {
  if (config_.aperture) {
    const auto& self = config_.apertureSelf;
    const std::string host = self.host.empty() ? primaryAddress() : self.host;
    boost::system::error_code ec;
    const auto address = boost::asio::ip::make_address(host, ec);
    if (!ec) {
      self_ = tcp::endpoint(address, self.port);
    }
    selfCoordinate_ = apertureHash(host + ":" + std::to_string(self.port));
    spdlog::info("event=aperture self={}:{} coordinate={:.6f} size={}", host, self.port,
                 selfCoordinate_, config_.apertureSize);
  }
}

RouteDirectory::~RouteDirectory() = default;

void RouteDirectory::start() {
  for (const auto& r : config_.routes) {
    make(r, false);
  }
  for (const auto& t : config_.thriftRoutes) {
    make(t.route, false);  // named thrift:PORT, published to that port's handlers
  }
  if (config_.aperture && self_ && !config_.aperturePath.empty()) {
    peers_ = std::make_unique<registry::ServersetResolver>(
        control_,
        registry::ServersetAddress{config_.apertureZk, config_.aperturePath, std::nullopt, ""},
        registry::ResolverOptions{.sessionTimeout = zkSessionTimeout_,
                                  .connect = sessions_.factory()},
        [this](const registry::ServersetSnapshot& s) { peersListed(s); });
    peers_->start();
  }
  // Once a second: prefix routes expire, held listings are trusted when their hold is over.
  scheduleSweep();
}

void RouteDirectory::peersListed(const registry::ServersetSnapshot& s) {
  std::vector<tcp::endpoint> peers;
  peers.reserve(s.members.size());
  for (const auto& [node, m] : s.members) {
    boost::system::error_code ec;
    const auto address = boost::asio::ip::make_address(m.endpoint.host, ec);
    if (!ec) {
      peers.push_back(tcp::endpoint(address, m.endpoint.port));
    }
  }
  apertureOrder(peers);
  peers.erase(std::unique(peers.begin(), peers.end()), peers.end());
  const auto it = std::lower_bound(peers.begin(), peers.end(), *self_);
  const bool found = it != peers.end() && *it == *self_;
  const std::size_t index = found ? static_cast<std::size_t>(it - peers.begin()) : 0;
  const std::size_t count = found ? peers.size() : 0;
  if (index == peerIndex_ && count == peerCount_) {
    return;
  }
  peerIndex_ = index;
  peerCount_ = count;
  spdlog::info("event=aperture_peers index={} peers={}", index, count);
  for (auto& r : routes_) {
    if (r && r->apertureSize > 0) {
      publishMembers(*r, false);
    }
  }
}

void RouteDirectory::scheduleSweep() {
  sweep_.expires_after(std::chrono::seconds(1));
  sweep_.async_wait([this](error_code ec) {
    if (!ec) {
      expire(Clock::now());
      scheduleSweep();
    }
  });
}

std::size_t RouteDirectory::freeSlot() {
  for (std::size_t slot = 0; slot < routes_.size(); ++slot) {
    if (!routes_[slot]) {
      return slot;
    }
  }
  routes_.emplace_back();
  return routes_.size() - 1;
}

RouteDirectory::Runtime& RouteDirectory::make(RouteConfig config, bool prefix) {
  const std::size_t slot = freeSlot();
  auto& r = *(routes_[slot] = std::make_unique<Runtime>());
  r.prefix = prefix;
  r.usedAt = r.emptySince = Clock::now();
  r.config = std::move(config);
  r.info = std::make_shared<RouteInfo>(RouteInfo{r.config.name, r.config.identity, slot});
  byName_[r.config.name] = slot;
  metrics_.name(slot, r.config.name);
  if (r.config.kind == RouteConfig::Kind::fixed) {
    // Names among them are looked up as a serverset member's are: off this thread, again every
    // --dns-refresh; the route is resolved once they have answered (or one member is usable).
    for (const auto& hp : r.config.fixed) {
      r.wanted.push_back(registry::Endpoint{hp.host, hp.port});
    }
    r.listed = true;
    wantNames(r);
    r.addr = std::make_shared<const Addr>(nextAddr(r, r.unresolved));
  } else {
    r.apertureSize = config_.aperture ? config_.apertureSize : 0;
    // Not current until ZooKeeper first answers: a route whose ensemble cannot be reached from
    // the start is as stale as one that lost it later.
    r.addr = std::make_shared<const Addr>(Addr::pending(true));
  }
  setGauges(r);
  spdlog::info("event=route_added route={} dest={} identity={}", r.config.name, r.config.dest,
               r.config.identity.empty() ? "-" : r.config.identity);
  publish_(r.info, r.addr);
  if (r.config.kind == RouteConfig::Kind::serverset) {
    attach(r);  // its callbacks find the route's members set
  }
  return r;
}

void RouteDirectory::attach(Runtime& r) {
  // The key holds what the resolver reads: the ensembles, the path and the endpoint.
  std::string key = r.config.zkConnect + '\n' + r.config.zkPath + '\n' + r.config.endpoint;
  auto& slot = sources_[key];
  if (slot) {
    // Another route reads this serverset already: this one takes its last answer at once.
    auto& source = *slot;
    source.routes.push_back(&r);
    r.source = &source;
    const bool stale = source.resolver->stale();
    if (auto snapshot = source.resolver->snapshot()) {
      resolved(r, *snapshot);
    }
    setStale(r, stale);
    return;
  }
  slot = std::make_unique<Source>();
  auto& source = *slot;
  source.key = std::move(key);
  source.routes.push_back(&r);
  r.source = &source;
  registry::ServersetAddress address{r.config.zkConnect, r.config.zkPath, std::nullopt,
                                     r.config.endpoint};
  source.resolver = std::make_unique<registry::ServersetResolver>(
      control_, address,
      registry::ResolverOptions{.sessionTimeout = zkSessionTimeout_,
                                .connect = sessions_.factory()},
      [this, &source](const registry::ServersetSnapshot& s) {
        // A copy, so that a publish may add a route to the list. It must never remove one: that
        // could free this source, and its resolver, while it is still inside this callback.
        const auto routes = source.routes;
        for (auto* route : routes) {
          resolved(*route, s);
        }
      },
      [this, &source](bool stale) {
        const auto routes = source.routes;
        for (auto* route : routes) {
          setStale(*route, stale);
        }
      });
  source.resolver->start();
}

void RouteDirectory::detach(Runtime& r) {
  if (!r.source) {
    return;
  }
  auto& source = *r.source;
  r.source = nullptr;
  std::erase(source.routes, &r);
  if (source.routes.empty()) {
    // The resolver goes with its session view, which removes its watches from ZooKeeper.
    sources_.erase(source.key);
  }
}

void RouteDirectory::ensure(const std::string& name) {
  if (auto it = byName_.find(name); it != byName_.end()) {
    auto& r = *routes_[it->second];
    publish_(r.info, r.addr);
    return;
  }
  if (prefixRoutes_ >= config_.maxRoutes) {
    // As Linkerd 1's binding cache: the least recently used makes room, so that names that do
    // not exist (typos, a flood) cannot keep out one that does.
    if (auto* lru = leastRecentlyUsed()) {
      remove(*lru, Expiry::evicted);
    }
  }
  ++prefixRoutes_;
  RouteConfig c;
  c.name = name;
  c.kind = RouteConfig::Kind::serverset;
  c.zkConnect = config_.prefixZk;
  c.zkPath = config_.routePrefix + (config_.routePrefix.ends_with('/') ? "" : "/") + name;
  c.dest = c.zkPath;
  c.identity = config_.prefixIdentity;
  for (auto at = c.identity.find("{name}"); at != std::string::npos;
       at = c.identity.find("{name}", at + name.size())) {
    c.identity.replace(at, 6, name);
  }
  make(std::move(c), true);
}

RouteDirectory::Runtime* RouteDirectory::leastRecentlyUsed() {
  Runtime* oldest = nullptr;
  const auto rank = [](const Runtime& r) {
    return std::pair{!r.addr->endpoints().empty(), r.usedAt};  // without members first
  };
  for (auto& r : routes_) {
    if (r && r->prefix && (!oldest || rank(*r) < rank(*oldest))) {
      oldest = r.get();
    }
  }
  return oldest;
}

void RouteDirectory::expire(Clock::time_point now) {
  {
    std::lock_guard lock(reportsMutex_);
    for (auto& r : routes_) {
      if (r && r->prefix) {
        if (auto it = usedAt_.find(r->config.name); it != usedAt_.end()) {
          r->usedAt = std::max(r->usedAt, it->second);
        }
      }
    }
  }
  if (config_.aperture) {
    sizeApertures();
  }
  for (auto& r : routes_) {
    // A held listing that no later one replaced is trusted once its hold is over.
    if (r && r->heldSince && now - *r->heldSince >= config_.dropHold) {
      r->heldSince.reset();
      spdlog::warn("event=serverset_drop_released route={} members={} reason=hold_over",
                   r->config.name, r->heldWanted.size());
      r->peak = r->heldWanted;
      r->peakAt = now;
      useListing(*r, std::move(r->heldWanted));
    }
  }
  for (auto& r : routes_) {
    if (!r || !r->prefix) {
      continue;
    }
    if (r->namesAwaited) {
      // Not negative while its names are being looked up (a slow resolver, a long queue): the
      // negative life runs from their first answers.
      r->emptySince = now;
    }
    if (r->addr->endpoints().empty() && now - r->emptySince >= kNegativeLife) {
      remove(*r, Expiry::negative);
    } else if (now - r->usedAt >= config_.routeIdleTimeout) {
      remove(*r, Expiry::idle);
    }
  }
}

void RouteDirectory::remove(Runtime& r, Expiry why) {
  static constexpr const char* kWhy[] = {"negative", "idle", "evicted"};
  spdlog::info("event=route_expired route={} reason={} members={}", r.config.name,
               kWhy[static_cast<int>(why)], r.addr->endpoints().size());
  (why == Expiry::negative ? metrics_.routesExpiredNegative
   : why == Expiry::idle   ? metrics_.routesExpiredIdle
                           : metrics_.routesExpiredEvicted)
      ->Increment();
  const std::size_t slot = r.info->slot;
  const auto info = r.info;
  metrics_.unname(slot, r.config.name);
  {
    std::lock_guard lock(reportsMutex_);
    reports_.erase(r.config.name);
    usedAt_.erase(r.config.name);
  }
  byName_.erase(r.config.name);
  --prefixRoutes_;
  detach(r);
  routes_[slot].reset();
  retract_(info);
}

void RouteDirectory::resolved(Runtime& r, const registry::ServersetSnapshot& s) {
  std::vector<registry::Endpoint> next;
  next.reserve(s.members.size());
  for (const auto& [node, m] : s.members) {
    next.push_back(m.endpoint);
  }
  r.malformed = s.malformed.size();
  if (holdsDrop(r, next, Clock::now())) {
    r.heldWanted = std::move(next);
    if (r.wanted != r.peak) {
      // Members that went before the loss was seen go back too: the whole storm is doubted.
      r.wanted = r.peak;
      wantNames(r);
      publishMembers(r, true);
    }
    return;
  }
  useListing(r, std::move(next));
}

bool RouteDirectory::holdsDrop(Runtime& r, const std::vector<registry::Endpoint>& next,
                               Clock::time_point now) {
  if (!r.listed || config_.dropLimit >= 1.0) {
    r.peak = next;
    r.peakAt = now;
    return false;
  }
  if (!r.heldSince && now - r.peakAt > config_.dropHold) {
    r.peak = r.wanted;  // an older peak is history: the set now trusted is the reference
    r.peakAt = now;
  }
  if (next.size() >= r.peak.size()) {
    r.peak = next;
    r.peakAt = now;
  }
  const std::size_t peak = r.peak.size();
  const std::size_t lost = peak - std::min(peak, next.size());
  // Two members at least (one going is a deploy).
  if (peak < 2 || static_cast<double>(lost) <= config_.dropLimit * static_cast<double>(peak)) {
    if (r.heldSince) {
      spdlog::info("event=serverset_drop_released route={} members={} reason=recovered",
                   r.config.name, next.size());
    }
    r.heldSince.reset();
    return false;
  }
  if (!r.heldSince) {
    r.heldSince = now;
    metrics_.dropsHeld->Add({{"route", r.config.name}}).Increment();
    spdlog::warn("event=serverset_drop_held route={} members={} listed={} hold_ms={}",
                 r.config.name, peak, next.size(), config_.dropHold.count());
  }
  if (now - *r.heldSince < config_.dropHold) {
    return true;
  }
  spdlog::warn("event=serverset_drop_released route={} members={} reason=hold_over", r.config.name,
               next.size());
  r.heldSince.reset();
  r.peak = next;
  r.peakAt = now;
  return false;
}

void RouteDirectory::useListing(Runtime& r, std::vector<registry::Endpoint> wanted) {
  r.heldWanted.clear();
  r.wanted = std::move(wanted);
  r.listed = true;
  wantNames(r);
  publishMembers(r, true);
}

Addr RouteDirectory::nextAddr(Runtime& r, std::size_t& unresolved) {
  auto expanded = expandMembers(r.wanted, names_);
  r.hostOf = std::move(expanded.hostOf);
  unresolved = expanded.unresolved;
  r.namesAwaited = expanded.awaited;
  // A listing that answered while the session was already lost is complete but may be old: it
  // stays stale until the resolver says it is current (setStale follows).
  const bool stale = r.source ? r.source->resolver->stale() : false;
  // A static route's first address is made here, from nothing (version 1).
  const Addr before = r.addr ? *r.addr : Addr::pending(stale, 0);
  if (!r.listed) {
    return before.withStale(stale);
  }
  if (r.apertureSize > 0) {
    narrow(r, expanded.members);
  }
  // Calls wait for a new route's names only while it has nothing else to offer.
  return before.answered(std::move(expanded.members), expanded.awaited, stale);
}

void RouteDirectory::narrow(Runtime& r, std::vector<tcp::endpoint>& members) {
  apertureOrder(members);
  const std::size_t n = members.size();
  r.apertureRing = n;
  // Its own member's position when it is one: the members of a serverset calling another then
  // sit evenly on the ring, and their windows cover its members evenly.
  const auto own = self_ ? std::lower_bound(members.begin(), members.end(), *self_) : members.end();
  std::size_t start = 0;
  std::size_t size = r.apertureSize;
  if (own != members.end() && *own == *self_) {
    r.apertureFrom = "position";
    start = static_cast<std::size_t>(own - members.begin());
    r.apertureCoordinate = static_cast<double>(start) / static_cast<double>(n);
  } else if (peerCount_ > 0 && n > 0) {
    // Its peers sit evenly on the ring, and their windows reach each other's: every member is
    // in as many windows as integers allow.
    r.apertureFrom = "peers";
    start = peerIndex_ * n / peerCount_;
    size = std::max(size, (n + peerCount_ - 1) / peerCount_);
    r.apertureCoordinate = static_cast<double>(peerIndex_) / static_cast<double>(peerCount_);
  } else {
    r.apertureFrom = "hash";
    start = apertureStart(selfCoordinate_, n);
    r.apertureCoordinate = selfCoordinate_;
  }
  members = apertureWindow(members, start, size);
}

void RouteDirectory::sizeApertures() {
  std::vector<Runtime*> resized;
  {
    std::lock_guard lock(reportsMutex_);
    for (auto& r : routes_) {
      if (!r || r->apertureSize == 0 || r->addr->endpoints().empty()) {
        continue;
      }
      std::uint64_t pending = 0;
      if (auto it = reports_.find(r->config.name); it != reports_.end()) {
        for (const auto& [worker, rep] : it->second) {
          for (const auto& v : rep.views) {
            pending += v.pending;
          }
        }
      }
      const double load =
          static_cast<double>(pending) / static_cast<double>(r->addr->endpoints().size());
      const std::size_t window = r->addr->endpoints().size();
      // Members of the window a worker has ejected: the window holds that many more, so that
      // --aperture-size of them can serve (a window whose members all fail, a rack of them in a
      // row, would otherwise keep this sidecar on them while the rest of the ring is healthy).
      const std::size_t out = std::min(window, ejectedNow(r->config.name));
      const bool thin = window - out < config_.apertureSize;
      if ((load > kApertureHighLoad || thin) && window < r->apertureRing) {
        // The window as it is, and one, or as many as are out.
        r->apertureSize = std::max(r->apertureSize, window) + std::max<std::size_t>(1, out);
      } else if (load < kApertureLowLoad && out == 0 && r->apertureSize > config_.apertureSize) {
        --r->apertureSize;
      } else {
        continue;
      }
      spdlog::info("event=aperture_resized route={} size={} load={:.2f} ejected={}", r->config.name,
                   r->apertureSize, load, out);
      resized.push_back(r.get());
    }
  }
  for (auto* r : resized) {
    publishMembers(*r, false);
  }
}

void RouteDirectory::setGauges(const Runtime& r) {
  const auto& name = r.config.name;
  metrics_.members->Add({{"route", name}}).Set(static_cast<double>(r.addr->endpoints().size()));
  metrics_.stale->Add({{"route", name}}).Set(r.addr->stale() ? 1 : 0);
  metrics_.membersUnresolved->Add({{"route", name}}).Set(static_cast<double>(r.unresolved));
}

void RouteDirectory::publishMembers(Runtime& r, bool listing) {
  std::size_t unresolved = 0;
  auto addr = nextAddr(r, unresolved);
  if (!listing && addr.endpoints() == r.addr->endpoints() && addr.state() == r.addr->state() &&
      unresolved == r.unresolved) {
    return;  // a name looked up again, to the same addresses
  }
  if (!addr.endpoints().empty() || !r.addr->endpoints().empty()) {
    r.emptySince = Clock::now();  // a negative entry's life runs from its last member
  }
  // With what changed beside it: each worker applies that instead of the whole set.
  r.addr = std::make_shared<const Addr>(std::move(addr).withDeltaFrom(*r.addr));
  r.unresolved = unresolved;
  setGauges(r);
  if (r.apertureSize > 0) {
    // The window, and the members it was chosen from.
    spdlog::info("event=route_members route={} members={} malformed={} unresolved={} listed={}",
                 r.config.name, r.addr->endpoints().size(), r.malformed, unresolved,
                 r.apertureRing);
  } else {
    spdlog::info("event=route_members route={} members={} malformed={} unresolved={}",
                 r.config.name, r.addr->endpoints().size(), r.malformed, unresolved);
  }
  publish_(r.info, r.addr);
}

void RouteDirectory::wantNames(const Runtime& r) {
  const auto now = Clock::now();
  for (const auto& w : r.wanted) {
    if (isHostName(w.host)) {
      names_.want(w.host, now);
    }
  }
  lookUpDue();
}

void RouteDirectory::lookUpDue() {
  for (auto& name : names_.due(Clock::now())) {
    lookups_.lookup(std::move(name));
  }
  if (!names_.empty()) {
    scheduleLookups();
  }
}

void RouteDirectory::scheduleLookups() {
  if (namesTicking_) {
    return;
  }
  namesTicking_ = true;
  namesTick_.expires_after(std::chrono::seconds(1));
  namesTick_.async_wait([this](error_code ec) {
    if (ec) {
      return;  // the directory is going
    }
    namesTicking_ = false;
    // Names no route announces any more are forgotten (a lookup under way is then dropped).
    std::set<std::string> used;
    for (const auto& r : routes_) {
      if (r) {
        for (const auto& w : r->wanted) {
          used.insert(w.host);
        }
      }
    }
    names_.retain(used);
    lookUpDue();
  });
}

void RouteDirectory::lookedUp(const std::string& name, LookupResult result) {
  const auto* before = names_.find(name);
  if (!before) {
    return;  // no route announces it any more
  }
  const bool wasFailing = before->failing;
  const bool wasAnswered = before->answered;
  const bool changed = names_.answered(name, result.addresses, result.error, Clock::now());
  const auto& e = *names_.find(name);
  std::string routes;
  for (auto& r : routes_) {
    if (!r || std::none_of(r->wanted.begin(), r->wanted.end(),
                           [&](const registry::Endpoint& w) { return w.host == name; })) {
      continue;
    }
    routes += (routes.empty() ? "" : ",") + r->config.name;
    if (e.failing) {
      metrics_.dnsFailures->Add({{"route", r->config.name}}).Increment();
    }
    if (changed) {
      publishMembers(*r, false);
    }
  }
  if (e.failing && (!wasFailing || !wasAnswered)) {
    spdlog::warn("event=dns_failed host={} routes={} kept={} reason=\"{}\"", name, routes,
                 e.addresses.size(), e.error);
  } else if (!e.failing && (changed || wasFailing)) {
    std::string addresses;
    for (const auto& a : e.addresses) {
      addresses += (addresses.empty() ? "" : ",") + a.to_string();
    }
    spdlog::info("event=dns_resolved host={} routes={} addresses={}", name, routes, addresses);
  }
}

void RouteDirectory::setStale(Runtime& r, bool stale) {
  if (r.addr->stale() == stale) {
    return;
  }
  r.addr = std::make_shared<const Addr>(r.addr->withStale(stale));
  metrics_.stale->Add({{"route", r.config.name}}).Set(stale ? 1 : 0);
  publish_(r.info, r.addr);
}

void RouteDirectory::report(unsigned worker, const std::string& route,
                            std::vector<MemberView> views, std::uint64_t ejections, bool used) {
  std::lock_guard lock(reportsMutex_);
  if (used) {
    usedAt_[route] = Clock::now();
  }
  reports_[route][worker] = Report{std::move(views), ejections};
}

std::size_t RouteDirectory::ejectedNow(const std::string& route) {
  std::size_t most = 0;
  auto it = reports_.find(route);
  if (it == reports_.end()) {
    return 0;
  }
  for (const auto& [worker, rep] : it->second) {
    std::size_t n = 0;
    for (const auto& v : rep.views) {
      n += v.state == "ejected" ? 1 : 0;
    }
    most = std::max(most, n);
  }
  return most;
}

void RouteDirectory::refreshGauges() {
  std::lock_guard lock(reportsMutex_);
  // Reports of routes that expired after the worker's last one are dropped here.
  std::erase_if(reports_, [this](const auto& kv) { return !byName_.contains(kv.first); });
  std::erase_if(usedAt_, [this](const auto& kv) { return !byName_.contains(kv.first); });
  for (const auto& r : routes_) {
    if (r) {
      metrics_.membersEjected->Add({{"route", r->config.name}})
          .Set(static_cast<double>(ejectedNow(r->config.name)));
    }
  }
}

std::string RouteDirectory::clientsJson() {
  std::lock_guard lock(reportsMutex_);
  boost::json::array out;
  for (const auto& r : routes_) {
    if (!r) {
      continue;
    }
    boost::json::object route;
    route["route"] = r->config.name;
    route["dest"] = r->config.dest;
    route["identity"] = r->config.identity;
    route["resolved"] = r->addr->isBound();
    route["stale"] = r->addr->stale();
    route["malformed_members"] = r->malformed;
    route["unresolved_members"] = r->unresolved;
    if (r->heldSince) {
      // A listing that lost most members, not trusted yet: the workers keep the last set.
      route["drop_held"] = boost::json::object{
          {"listed_members", r->heldWanted.size()},
          {"held_for_ms",
           std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - *r->heldSince)
               .count()}};
    }
    if (r->apertureSize > 0) {
      route["aperture"] = boost::json::object{{"size", r->apertureSize},
                                              {"members", r->apertureRing},
                                              {"coordinate", r->apertureCoordinate},
                                              {"from", r->apertureFrom}};
    }
    route["names"] = namesJson(*r);
    route["members"] = membersJson(*r);
    out.push_back(std::move(route));
  }
  return boost::json::serialize(boost::json::object{{"clients", out}}) + "\n";
}

boost::json::array RouteDirectory::namesJson(const Runtime& r) const {
  // The host names members announced, each with its addresses as last looked up.
  boost::json::array names;
  std::set<std::string> listed;
  for (const auto& w : r.wanted) {
    const auto* e = names_.find(w.host);
    if (!e || !listed.insert(w.host).second) {
      continue;
    }
    boost::json::object n;
    n["host"] = w.host;
    boost::json::array addresses;
    for (const auto& a : e->addresses) {
      addresses.push_back(boost::json::string(a.to_string()));
    }
    n["addresses"] = std::move(addresses);
    n["state"] = !e->answered ? "pending" : e->failing ? "failing" : "resolved";
    if (e->failing) {
      n["error"] = e->error;
    }
    names.push_back(std::move(n));
  }
  return names;
}

boost::json::array RouteDirectory::membersJson(const Runtime& r) const {
  // Per member: the workers' views summed (pending) and averaged (cost, latency); the state is
  // the worst any worker has it in. Under reportsMutex_.
  std::map<std::string, boost::json::object> members;
  for (const auto& e : r.addr->endpoints()) {
    boost::json::object m;
    m["address"] = endpointText(e);
    if (auto h = r.hostOf.find(endpointText(e)); h != r.hostOf.end()) {
      m["host"] = h->second;
    }
    m["pending"] = 0;
    m["cost"] = 0.0;
    m["ewma_ms"] = 0.0;
    m["state"] = "alive";
    members[endpointText(e)] = m;
  }
  if (auto it = reports_.find(r.config.name); it != reports_.end()) {
    std::map<std::string, int> seen;
    for (const auto& [worker, rep] : it->second) {
      for (const auto& v : rep.views) {
        const auto key = endpointText(v.endpoint);
        auto m = members.find(key);
        if (m == members.end()) {
          continue;
        }
        auto& o = m->second;
        const int n = ++seen[key];
        o["pending"] =
            o["pending"].to_number<std::int64_t>() + static_cast<std::int64_t>(v.pending);
        o["cost"] = o["cost"].to_number<double>() + (v.cost - o["cost"].to_number<double>()) / n;
        o["ewma_ms"] =
            o["ewma_ms"].to_number<double>() + (v.ewmaMs - o["ewma_ms"].to_number<double>()) / n;
        if (v.state != "alive") {
          o["state"] = v.state;
        }
      }
    }
  }
  boost::json::array list;
  for (auto& [k, m] : members) {
    list.push_back(std::move(m));
  }
  return list;
}

void RouteDirectory::addFinagleMetrics(boost::json::object& o) {
  std::lock_guard lock(reportsMutex_);
  for (const auto& r : routes_) {
    if (!r) {
      continue;
    }
    const auto slot = r->info->slot;
    const std::string prefix = "clnt/" + r->config.name + "/";
    uint64_t requests = 0, failures = 0;
    for (unsigned cls = 1; cls <= 5; ++cls) {
      const auto n = metrics_.requests.value(OutboundMetrics::requestSeries(slot, cls * 100));
      requests += n;
      failures += cls == 5 ? n : 0;
    }
    o[prefix + "requests"] = requests;
    o[prefix + "success"] = requests - failures;
    o[prefix + "failures"] = failures;
    o[prefix + "retries"] = metrics_.retries.value(slot);
    o[prefix + "retries/budget_exhausted"] = metrics_.budgetExhausted.value(slot);
    const auto size = r->addr->endpoints().size();
    o[prefix + "loadbalancer/size"] = size;
    o[prefix + "loadbalancer/available"] = size - std::min(size, ejectedNow(r->config.name));
    auto s = metrics_.requestDuration.snapshot(slot);
    const auto& bounds = metrics_.requestDuration.bounds();
    o[prefix + "request_latency_ms.count"] = s.count;
    for (auto [suffix, q] :
         {std::pair{".p50", 0.5}, {".p90", 0.9}, {".p99", 0.99}, {".p9990", 0.999}}) {
      o[prefix + "request_latency_ms" + suffix] = s.quantile(bounds, q) * 1000.0;
    }
  }
}

}  // namespace sidecar
