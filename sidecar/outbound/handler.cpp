// The outbound handler's per-worker state: routes, their balancers, the pool and TLS sessions.
#include "outbound/handler.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>

#include "outbound/session.h"

namespace sidecar {

OutboundHandler::OutboundHandler(Worker& worker, const OutboundShared& shared,
                                 std::shared_ptr<asio::ssl::context> tls)
    : worker_(worker), shared_(shared), tls_(std::move(tls)) {}

OutboundHandler::Route& OutboundHandler::add(std::shared_ptr<const RouteInfo> info,
                                             std::shared_ptr<const Addr> addr) {
  const auto seed = Route::seed(info->name, worker_.index());
  // --upstream-max-idle bounds the worker's idle connections to members of all routes together:
  // a hundred prefix routes must not keep a hundred times as many.
  const PoolSettings pool{shared_.config.idleTimeout,
                          shared_.limits.upstreamMaxIdle,
                          nullptr,
                          nullptr,
                          nullptr,
                          &idleToMembers_};
  auto name = info->name;
  auto& r = routes_[name];
  r = std::make_shared<Route>(std::move(info), std::move(addr), seed, pool);
  return *r;
}

void OutboundHandler::clear() {
  for (auto& [name, r] : routes_) {
    r->pool.clear();
    for (auto& [member, p] : r->h2Pools) {
      p->clear();
    }
    for (auto& p : r->retiredH2) {
      p->clear();
    }
  }
}

h2::ClientPool& OutboundHandler::Route::h2Pool(const tcp::endpoint& member,
                                               OutboundHandler& handler) {
  auto& p = h2Pools[member];
  if (!p) {
    const auto& c = handler.shared().config;
    // Two connections a member: streams are balanced across members, not across connections.
    h2::ClientLimits limits{c.connectTimeout, c.idleTimeout, c.timeout, 2, nullptr};
    p = std::make_unique<h2::ClientPool>(handler.worker().ioc().get_executor(), member,
                                         h2::Settings{}, limits,
                                         h2::ClientTls{handler.tls(), info->name, info->identity});
  }
  return *p;
}

h2::ClientPool* OutboundHandler::Route::refusingH2(const tcp::endpoint& member) {
  if (auto it = h2Pools.find(member); it != h2Pools.end() && it->second->refusedH2()) {
    return it->second.get();
  }
  for (auto& p : retiredH2) {
    if (p->endpoint() == member && p->refusedH2()) {
      return p.get();
    }
  }
  return nullptr;
}

void OutboundHandler::sweepH2(std::chrono::steady_clock::time_point now) {
  for (auto& [name, r] : routes_) {
    for (auto& [member, p] : r->h2Pools) {
      p->sweep(now);
    }
    for (auto& p : r->retiredH2) {
      p->sweep(now);
    }
  }
}

void OutboundHandler::accepted(TcpSocket socket) {
  asio::co_spawn(worker_.ioc(), serveOutbound(*this, std::move(socket)), asio::detached);
}

void OutboundHandler::setRoute(std::shared_ptr<const RouteInfo> info,
                               std::shared_ptr<const Addr> addr) {
  asio::post(worker_.ioc(), [this, info = std::move(info), addr = std::move(addr)] {
    auto it = routes_.find(info->name);
    auto& r = it != routes_.end() ? *it->second : add(info, addr);
    r.update(info, addr);
  });
}

void OutboundHandler::dropRoute(std::shared_ptr<const RouteInfo> info) {
  asio::post(worker_.ioc(), [this, info = std::move(info)] {
    auto it = routes_.find(info->name);
    if (it != routes_.end() && it->second->info == info) {
      routes_.erase(it);  // its idle connections close; calls in flight hold it until they end
    }
  });
}

void OutboundHandler::setTls(std::shared_ptr<asio::ssl::context> ctx) {
  asio::post(worker_.ioc(), [this, ctx = std::move(ctx)]() mutable {
    tls_ = std::move(ctx);
    // Sessions and idle connections of the old certificate: resuming or reusing them would go
    // on presenting the old identity.
    for (auto& [name, r] : routes_) {
      r->forgetTls();
    }
  });
}

std::shared_ptr<OutboundHandler::Route> OutboundHandler::route(const std::string& name,
                                                               bool mayMake) {
  if (auto it = routes_.find(name); it != routes_.end()) {
    return it->second;
  }
  const auto& c = shared_.config;
  // The control thread keeps --max-routes prefix routes, expiring the least recently used; a
  // worker holds those and at most as many again that it asked for and waits for.
  const std::size_t most = c.routes.size() + 2 * c.maxRoutes;
  if (!mayMake || c.routePrefix.empty() || routes_.size() >= most) {
    return nullptr;
  }
  shared_.requestRoute(name);
  // Waits for its members, pending; the control thread's answer replaces both.
  static const auto kPending = std::make_shared<const Addr>(Addr::pending());
  add(std::make_shared<RouteInfo>(RouteInfo{name, {}, 0}), kPending);
  return routes_[name];
}

SSL_SESSION* OutboundHandler::Route::session(const tcp::endpoint& e) {
  for (auto& [endpoint, s] : sessions) {
    if (endpoint == e) {
      return s.get();
    }
  }
  return nullptr;
}

void OutboundHandler::Route::keepSession(const tcp::endpoint& e, TlsStream::Session s) {
  if (!s) {
    return;
  }
  for (auto& [endpoint, kept] : sessions) {
    if (endpoint == e) {
      kept = std::move(s);
      return;
    }
  }
  if (sessions.size() >= 1024) {
    sessions.erase(sessions.begin());
  }
  sessions.emplace_back(e, std::move(s));
}

awaitable<void> OutboundHandler::Route::awaitResolution(asio::io_context& ioc, Duration timeout) {
  SteadyTimer timer(ioc);
  timer.expires_after(timeout);
  waiters.push_back(&timer);
  co_await timer.async_wait(useTuple);
  std::erase(waiters, &timer);
}

void OutboundHandler::Route::update(std::shared_ptr<const RouteInfo> i,
                                    std::shared_ptr<const Addr> a) {
  info = std::move(i);
  addr = std::move(a);
  // A change costs the worker what changed: the same version is the same set (only staleness
  // moved, or the route was published again), and a delta from the version held is applied as
  // such. Versions count per route: another route of the same name starts again, so the whole
  // set then.
  const auto now = std::chrono::steady_clock::now();
  const bool same = balanced && balancedFor == info;
  if (!same || addr->version() != balanced->version()) {
    if (const auto* d = addr->delta(); same && d && d->from == balanced->version()) {
      balancer.apply(d->added, d->removed, now);
    } else {
      balancer.update(addr->endpoints(), now);
    }
  }
  balanced = addr;
  balancedFor = info;
  if (addr->isBound()) {
    for (auto* t : waiters) {
      t->cancel();
    }
  }
}

void OutboundHandler::Route::tick(unsigned worker, const OutboundShared& shared) {
  pool.sweep();
  std::erase_if(retiredH2, [](const auto& p) { return p->connections() == 0; });
  std::erase_if(h2Pools, [](const auto& kv) { return kv.second->connections() == 0; });
  const auto now = std::chrono::steady_clock::now();
  std::erase_if(http1Members, [now](const auto& kv) { return kv.second <= now; });
  const auto ejected = balancer.ejections();
  if (ejected > ejectionsSeen) {
    shared.metrics->ejections.add(worker, info->slot, ejected - ejectionsSeen);
    ejectionsSeen = ejected;
  }
  if (shared.report) {
    shared.report(worker, info->name, balancer.members(std::chrono::steady_clock::now()), ejected,
                  calls != callsReported);
    callsReported = calls;
  }
}

void OutboundHandler::tick() {
  sweepH2(std::chrono::steady_clock::now());  // when no HTTP/2 caller sweeps them more often
  for (auto& [name, r] : routes_) {
    r->tick(worker_.index(), shared_);
  }
}

}  // namespace sidecar
