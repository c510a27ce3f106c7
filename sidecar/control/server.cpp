// Wires the process together: workers and their handlers, the admin server, signals, TLS
// reloads, the announcement and the drain. Each of those is its own unit; this file only
// connects them and owns the control thread's io_context.
#include "control/server.h"

#include <metrics/metrics.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <csignal>
#include <iostream>

#include "control/admin.h"
#include "control/admin_views.h"
#include "control/announce.h"
#include "control/drain.h"
#include "control/metrics.h"
#include "control/startup.h"
#include "control/tls_reloader.h"
#include "http/plain_server.h"
#include "inbound/handler.h"
#include "net/access_log.h"
#include "net/listener.h"
#include "net/worker.h"
#include "outbound/directory.h"
#include "outbound/handler.h"
#include "thrift/handler.h"
#include "thrift/metrics.h"
#include "thrift/outbound.h"

namespace sidecar {

namespace {

// Admin connections open at once. Its users are a few probes and scrapers; the bound keeps a
// client that opens connections without end from taking the descriptors callers need, and fits
// (with the process's own ~20) in the 64 descriptors --max-connections 0 leaves aside. At the
// bound the connection waiting longest for a request is closed, so that a prober still gets in.
constexpr std::size_t kAdminMaxConnections = 32;
constexpr Duration kAdminIdleTimeout{30'000};

// What the control thread changes in one listener's handlers (one per worker) once they run: the
// certificate after a reload and, for the outbound listeners, the routes.
class ListenerHandlers {
 public:
  virtual ~ListenerHandlers() = default;
  virtual bool empty() const = 0;
  virtual void setTls(const std::shared_ptr<asio::ssl::context>& ctx) = 0;
  virtual void setRoute(const std::shared_ptr<const RouteInfo>& info,
                        const std::shared_ptr<const Addr>& addr) = 0;
  virtual void dropRoute(const std::shared_ptr<const RouteInfo>& info) = 0;
};

template <class H>
class HandlersOf final : public ListenerHandlers {
 public:
  std::vector<H*> handlers;  // owned by the workers

  bool empty() const override { return handlers.empty(); }
  void setTls(const std::shared_ptr<asio::ssl::context>& ctx) override {
    for (auto* h : handlers) {
      h->setTls(ctx);
    }
  }
  void setRoute(const std::shared_ptr<const RouteInfo>& info,
                const std::shared_ptr<const Addr>& addr) override {
    if constexpr (requires(H & h) { h.setRoute(info, addr); }) {
      for (auto* h : handlers) {
        h->setRoute(info, addr);
      }
    }
  }
  void dropRoute(const std::shared_ptr<const RouteInfo>& info) override {
    if constexpr (requires(H & h) { h.dropRoute(info); }) {
      for (auto* h : handlers) {
        h->dropRoute(info);
      }
    }
  }
};

// A data-path listener: one address, bound on every worker (SO_REUSEPORT) with a handler each.
struct ListenerSpec {
  enum class Kind : std::uint8_t { inbound, outbound, thriftRoute, thrift };
  enum class Tls : std::uint8_t { server, client };  // the context its handlers take on reload
  enum class Routes : std::uint8_t { none, http, thrift };  // the routes published to them

  ListenerSpec(Kind kind, std::string flag, std::string configured, Budget budget, Tls tls,
               Routes routes = Routes::none)
      : kind(kind),
        flag(std::move(flag)),
        configured(std::move(configured)),
        budget(budget),
        tls(tls),
        routes(routes) {}

  Kind kind;
  std::string flag;        // names it in failure messages: "--listen"
  std::string configured;  // its address as configured, for those messages
  Budget budget;
  Tls tls;
  Routes routes;
  bool samePort = true;  // port 0 becomes, on every worker, the port the first one got
  // Resolves and probes the address just before binding, after printing why not: nullopt. Unset:
  // address was resolved and probed when the spec was made.
  std::function<std::optional<tcp::endpoint>()> prepare;
  tcp::endpoint address;
  std::function<std::unique_ptr<ConnectionHandler>(Worker&)> makeHandler;
  std::shared_ptr<ListenerHandlers> handlers;
  // As bound: the listener's index in each worker, and the address (the resolved one when not
  // samePort).
  std::size_t index = 0;
  tcp::endpoint bound;

  template <class H, class Make>
  void handle(Make make) {
    auto typed = std::make_shared<HandlersOf<H>>();
    handlers = typed;
    makeHandler = [typed, make = std::move(make)](Worker& w) -> std::unique_ptr<ConnectionHandler> {
      std::unique_ptr<H> h = make(w);
      typed->handlers.push_back(h.get());
      return h;
    };
  }
};

class Server {
 public:
  explicit Server(const SidecarConfig& config)
      : config_(config),
        registry_(metrics::makeRegistry()),
        inboundMetrics_(*registry_, config.workers),
        controlMetrics_(*registry_),
        announcerMetrics_(*registry_),
        signals_(control_, SIGINT, SIGTERM, SIGHUP),
        abortTimer_(control_),
        tls_(control_,
             TlsFiles{config.tlsCert, config.tlsKey, config.tlsClientCa, config.http2.enabled},
             config.tlsReloadInterval, controlMetrics_,
             [this](const TlsContext& ctx) {
               for (auto& l : listeners_) {
                 if (l.tls == ListenerSpec::Tls::server) {
                   l.handlers->setTls(ctx.ssl);
                 }
               }
               reloadOutboundTls();
             }),
        drain_(control_, config.deregisterGrace, config.drainTimeout, drainSteps()),
        admin_(
            control_, [this](const PlainRequest& r) { return handleAdminRequest(r, hooks()); },
            adminOptions()) {
    workerShared_.metrics = WorkerMetrics(*registry_);
    if (!config_.trace.zipkinUrl.empty()) {
      traceMetrics_.emplace(*registry_);
      const auto& t = config_.trace;
      tracer_ = std::make_unique<trace::Tracer>(
          trace::TracerConfig{
              .zipkinUrl = t.zipkinUrl, .sampleRate = t.sampleRate, .serviceName = t.serviceName},
          *traceMetrics_);
    }
  }

  // Start-up in this order, each step printing why it cannot go on (exit code 2); then the
  // control thread runs until the drain has finished.
  int run() {
    auto tls = tls_.initial();
    if (auto* error = std::get_if<std::string>(&tls)) {
      std::cerr << "sidecar: " << *error << "\n";
      return 2;
    }
    const auto& serverTls = std::get<TlsContext>(tls).ssl;
    std::optional<tcp::endpoint> listen;
    if (!resolveAddresses(listen) || !openAccessLog()) {
      return 2;
    }
    warnIfReadableByOthers(config_.tlsKey);
    setLimits();
    if (!addInboundListener(*listen, serverTls) || (config_.outbound && !addOutboundListeners())) {
      return 2;
    }
    if (config_.thrift) {
      addThriftListener(serverTls);
    }
    try {
      for (unsigned i = 0; i < config_.workers; ++i) {
        workers_.emplace_back(std::make_unique<Worker>(workerShared_, i));
      }
    } catch (const boost::system::system_error& e) {
      // A worker's io_context takes descriptors (epoll, eventfd): EMFILE here, as before, is
      // --listen's one line and exit 2, not an abort.
      std::cerr << "sidecar: --listen " << config_.listen.str() << ": " << e.code().message()
                << "\n";
      return 2;
    }
    if (!bindListeners()) {
      return 2;
    }
    if (outboundShared_) {
      makeDirectory();
    }
    try {
      admin_.listen(adminListen_);
    } catch (const boost::system::system_error& e) {
      std::cerr << "sidecar: --admin-listen " << config_.adminListen.str() << ": "
                << e.code().message() << "\n";
      return 2;
    }
    startServing();
    control_.run();
    for (auto& w : workers_) {
      w->stop();
    }
    spdlog::info("event=stopped");
    return 0;
  }

 private:
  // --upstream, --listen (into listen) and --admin-listen; false after printing why not.
  bool resolveAddresses(std::optional<tcp::endpoint>& listen) {
    auto upstream = resolveOne(control_, config_.upstream);
    if (!upstream) {
      std::cerr << "sidecar: --upstream: cannot resolve '" << config_.upstream.host << "'\n";
      return false;
    }
    upstream_ = *upstream;
    grpcUpstream_ = upstream_;
    if (config_.http2.grpcUpstream) {
      auto grpc = resolveOne(control_, *config_.http2.grpcUpstream);
      if (!grpc) {
        std::cerr << "sidecar: --upstream-grpc: cannot resolve '"
                  << config_.http2.grpcUpstream->host << "'\n";
        return false;
      }
      grpcUpstream_ = *grpc;
    }
    listen = resolveOne(control_, config_.listen);
    auto adminListen = resolveOne(control_, config_.adminListen);
    if (!listen || !adminListen) {
      std::cerr << "sidecar: " << (listen ? "--admin-listen" : "--listen") << ": cannot resolve '"
                << (listen ? config_.adminListen.host : config_.listen.host) << "'\n";
      return false;
    }
    adminListen_ = *adminListen;
    return true;
  }

  bool openAccessLog() {
    if (!config_.accessLog.empty()) {
      try {
        accessLog_ =
            std::make_unique<AccessLog>(config_.accessLog, workerShared_.metrics.accessLogDropped);
      } catch (const std::exception& e) {
        std::cerr << "sidecar: --access-log '" << config_.accessLog << "': " << e.what() << "\n";
        return false;
      }
    }
    return true;
  }

  // The connection budgets and what every worker shares.
  void setLimits() {
    limits_ = config_.limits;
    limits_.maxConnections = resolveMaxConnections(limits_.maxConnections);
    (*workerShared_.connections)[Budget::listen].limit = limits_.maxConnections;
    (*workerShared_.connections)[Budget::thrift].limit =
        resolveMaxConnections(limits_.thriftMaxConnections);
    (*workerShared_.connections)[Budget::outbound].limit =
        resolveMaxConnections(limits_.outboundMaxConnections);
    workerShared_.busyPoll = config_.busyPoll;
    workerShared_.accessLog = accessLog_.get();
  }

  // The mTLS listener (--listen), probed now; false after printing why not.
  bool addInboundListener(const tcp::endpoint& listen,
                          const std::shared_ptr<asio::ssl::context>& serverTls) {
    inboundShared_.emplace(InboundShared{limits_, IdentityAllowList(config_.allowIdentities),
                                         &inboundMetrics_, StaticCluster("local", {upstream_}),
                                         config_.upstream.str()});
    inboundShared_->tracer = tracer_.get();
    inboundShared_->upstreamProtocol = config_.http2.upstream;
    inboundShared_->h2.maxConcurrentStreams = config_.http2.maxConcurrentStreams;
    inboundShared_->h2.maxHeaderList = static_cast<std::uint32_t>(limits_.maxHeadBytes);
    inboundShared_->upstreamH2Connections = config_.http2.upstreamConnections;
    inboundShared_->h2Upstream = grpcUpstream_;
    if (auto ec = probeUnshared(control_, listen)) {
      std::cerr << "sidecar: --listen " << config_.listen.str() << ": " << ec.message() << "\n";
      return false;
    }
    auto& l = listeners_.emplace_back(ListenerSpec::Kind::inbound, "--listen", config_.listen.str(),
                                      Budget::listen, ListenerSpec::Tls::server);
    l.address = listen;
    l.handle<InboundHandler>([this, serverTls](Worker& w) {
      return std::make_unique<InboundHandler>(w, *inboundShared_, config_.workers, serverTls);
    });
    return true;
  }

  // The outbound client certificate, the HTTP listener (--outbound-listen, probed now) and one
  // listener per --thrift-route (probed when bound); false after printing why not.
  bool addOutboundListeners() {
    const auto& o = *config_.outbound;
    auto client = makeClientTlsContext(outboundFiles(), "--outbound-ca");
    if (auto* error = std::get_if<std::string>(&client)) {
      std::cerr << "sidecar: " << *error << "\n";
      return false;
    }
    auto outboundTls = std::get<TlsContext>(client).ssl;
    std::optional<tcp::endpoint> outboundListen;
    if (o.httpListener) {
      outboundListen = resolveOne(control_, o.listen);
      if (!outboundListen) {
        std::cerr << "sidecar: --outbound-listen: cannot resolve '" << o.listen.host << "'\n";
        return false;
      }
      if (auto ec = probeUnshared(control_, *outboundListen)) {
        std::cerr << "sidecar: --outbound-listen " << o.listen.str() << ": " << ec.message()
                  << "\n";
        return false;
      }
    }
    const std::size_t slots =
        o.routes.size() + o.thriftRoutes.size() + (o.routePrefix.empty() ? 0 : o.maxRoutes);
    outboundMetrics_.emplace(*registry_, std::max<std::size_t>(slots, 1), config_.workers);
    outboundShared_.emplace(OutboundShared{
        o, limits_, &*outboundMetrics_,
        [this](std::string name) {
          asio::post(control_, [this, name = std::move(name)] { directory_->ensure(name); });
        },
        [this](unsigned worker, const std::string& route, std::vector<MemberView> views,
               std::uint64_t ejections, bool used) {
          directory_->report(worker, route, std::move(views), ejections, used);
        }});
    outboundShared_->tracer = tracer_.get();
    if (outboundListen) {
      auto& l = listeners_.emplace_back(ListenerSpec::Kind::outbound, "--outbound-listen",
                                        o.listen.str(), Budget::outbound, ListenerSpec::Tls::client,
                                        ListenerSpec::Routes::http);
      l.address = *outboundListen;
      l.handle<OutboundHandler>([this, outboundTls](Worker& w) {
        return std::make_unique<OutboundHandler>(w, *outboundShared_, outboundTls);
      });
    }
    if (!o.thriftRoutes.empty()) {
      thriftOutMetrics_.emplace(*registry_);
    }
    for (const auto& t : o.thriftRoutes) {
      addThriftRouteListener(t, outboundTls);
    }
    return true;
  }

  void addThriftRouteListener(const ThriftRouteConfig& t,
                              const std::shared_ptr<asio::ssl::context>& outboundTls) {
    auto& l = listeners_.emplace_back(ListenerSpec::Kind::thriftRoute, "--thrift-route",
                                      t.listen.str(), Budget::outbound, ListenerSpec::Tls::client,
                                      ListenerSpec::Routes::thrift);
    l.samePort = false;
    l.prepare = [this, &t]() -> std::optional<tcp::endpoint> {
      auto listen = resolveOne(control_, t.listen);
      if (!listen) {
        std::cerr << "sidecar: --thrift-route: cannot resolve '" << t.listen.host << "'\n";
        return std::nullopt;
      }
      if (auto ec = probeUnshared(control_, *listen)) {
        std::cerr << "sidecar: --thrift-route " << t.listen.str() << ": " << ec.message() << "\n";
        return std::nullopt;
      }
      return listen;
    };
    l.handle<ThriftOutboundHandler>([this, &t, outboundTls](Worker& w) {
      return std::make_unique<ThriftOutboundHandler>(w, *outboundShared_, *thriftOutMetrics_, t,
                                                     config_.trace.thriftClientId, outboundTls);
    });
  }

  // The inbound Thrift listener (--thrift-listen), resolved and probed when bound.
  void addThriftListener(const std::shared_ptr<asio::ssl::context>& serverTls) {
    const auto& t = *config_.thrift;
    auto& l = listeners_.emplace_back(ListenerSpec::Kind::thrift, "--thrift-listen", t.listen.str(),
                                      Budget::thrift, ListenerSpec::Tls::server);
    l.prepare = [this, &t]() -> std::optional<tcp::endpoint> {
      auto local = resolveOne(control_, t.upstream);
      if (!local) {
        std::cerr << "sidecar: --thrift-upstream: cannot resolve '" << t.upstream.host << "'\n";
        return std::nullopt;
      }
      auto listen = resolveOne(control_, t.listen);
      if (!listen) {
        std::cerr << "sidecar: --thrift-listen: cannot resolve '" << t.listen.host << "'\n";
        return std::nullopt;
      }
      if (auto ec = probeUnshared(control_, *listen)) {
        std::cerr << "sidecar: --thrift-listen " << t.listen.str() << ": " << ec.message() << "\n";
        return std::nullopt;
      }
      thriftMetrics_.emplace(*registry_, config_.workers);
      thriftShared_.emplace(ThriftShared{limits_, IdentityAllowList(config_.allowIdentities),
                                         &*thriftMetrics_, *local, t.maxFrame,
                                         std::max<std::size_t>(t.maxBuffered, t.maxFrame + 4)});
      thriftShared_->tracer = tracer_.get();
      return listen;
    };
    l.handle<ThriftHandler>([this, serverTls](Worker& w) {
      return std::make_unique<ThriftHandler>(w, *thriftShared_, serverTls);
    });
  }

  // Every listener in order on every worker; false after printing why not.
  bool bindListeners() {
    for (auto& l : listeners_) {
      if (l.prepare) {
        auto address = l.prepare();
        if (!address) {
          return false;
        }
        l.address = *address;
      }
      try {
        tcp::endpoint bound = l.address;
        for (auto& w : workers_) {
          l.index = w->addListener(bound, l.makeHandler(*w), l.budget);
          if (l.samePort) {
            bound = w->localEndpoint(l.index);
          }
        }
        l.bound = bound;
      } catch (const boost::system::system_error& e) {
        std::cerr << "sidecar: " << l.flag << " " << l.configured << ": " << e.code().message()
                  << "\n";
        return false;
      }
    }
    return true;
  }

  // Routes reach the listeners that serve them: thrift:PORT the port's own handlers (each takes
  // its own), the rest the HTTP listener. Only prefix routes expire, and they are all HTTP routes.
  void makeDirectory() {
    directory_.emplace(
        control_, *config_.outbound, config_.outbound->zkSessionTimeout, *outboundMetrics_,
        [this](std::shared_ptr<const RouteInfo> info, std::shared_ptr<const Addr> addr) {
          const auto routes = isThriftRouteName(info->name) ? ListenerSpec::Routes::thrift
                                                            : ListenerSpec::Routes::http;
          for (auto& l : listeners_) {
            if (l.routes == routes) {
              l.handlers->setRoute(info, addr);
            }
          }
        },
        [this](std::shared_ptr<const RouteInfo> info) {
          for (auto& l : listeners_) {
            if (l.routes == ListenerSpec::Routes::http) {
              l.handlers->dropRoute(info);
            }
          }
        });
  }

  const ListenerSpec* listener(ListenerSpec::Kind kind) const {
    for (const auto& l : listeners_) {
      if (l.kind == kind) {
        return &l;
      }
    }
    return nullptr;
  }

  // Everything bound: routes, workers, admin, announcement, signals, reloads; then the started
  // line.
  void startServing() {
    if (directory_) {
      directory_->start();  // the declared routes reach the workers before their first request
    }
    for (auto& w : workers_) {
      w->start();
    }
    admin_.start();
    const auto* outbound = listener(ListenerSpec::Kind::outbound);
    const auto* thrift = listener(ListenerSpec::Kind::thrift);
    if (config_.announce) {
      announcement_.emplace(
          control_, *config_.announce, upstream_,
          AnnouncedPorts{workers_.front()->localEndpoint().port(), admin_.localEndpoint().port(),
                         thrift ? std::optional<uint16_t>(thrift->bound.port()) : std::nullopt},
          announcerMetrics_);
    }
    waitForSignal();
    tls_.start();
    started_ = std::chrono::system_clock::now();
    ready_ = true;
    std::string thriftRoutes;  // the --thrift-route ports, comma-separated
    for (const auto& l : listeners_) {
      if (l.kind == ListenerSpec::Kind::thriftRoute) {
        thriftRoutes += (thriftRoutes.empty() ? "" : ",") + endpointText(l.bound);
      }
    }
    spdlog::info(
        "event=started listen={} admin={} upstream={} outbound={} thrift_listen={} "
        "thrift_routes={} workers={} version={}",
        endpointText(workers_.front()->localEndpoint()), endpointText(admin_.localEndpoint()),
        endpointText(upstream_),
        outbound ? endpointText(workers_.front()->localEndpoint(outbound->index))
                 : std::string("off"),
        thrift ? endpointText(thrift->bound) : std::string("off"),
        thriftRoutes.empty() ? std::string("off") : thriftRoutes, workers_.size(), SIDECAR_VERSION);
  }

  PlainHttpServer::Options adminOptions() {
    return PlainHttpServer::Options{
        .idleTimeout = kAdminIdleTimeout,
        .maxConnections = kAdminMaxConnections,
        .name = "admin",
        .openChanged =
            [this](std::size_t open) {
              controlMetrics_.adminConnectionsOpen->Set(static_cast<double>(open));
            },
        .refused = [this] { controlMetrics_.adminConnectionsRefused->Increment(); },
        .evicted = [this] { controlMetrics_.adminConnectionsEvicted->Increment(); },
    };
  }

  AdminHooks hooks() {
    return AdminHooks{
        .ready =
            [this] {
              return ready_ && !drain_.draining() && (!announcement_ || announcement_->announced());
            },
        .draining = [this] { return drain_.draining(); },
        .quit =
            [this](std::optional<Duration> grace) {
              asio::post(control_, [this, grace] { beginShutdown("quitquitquit", grace); });
            },
        .abort =
            [this] {
              spdlog::warn("event=abort source=abortabortabort");
              abortTimer_.expires_after(std::chrono::milliseconds(50));
              abortTimer_.async_wait([](auto) { std::_Exit(1); });
            },
        .metricsText =
            [this] {
              std::vector<const prometheus::Collectable*> sources{registry_.get(),
                                                                  &inboundMetrics_.collector};
              if (directory_) {
                directory_->refreshGauges();
                sources.push_back(&outboundMetrics_->collector);
                sources.push_back(&outboundMetrics_->grpc);
              }
              if (thriftMetrics_) {
                sources.push_back(&thriftMetrics_->methods);
                sources.push_back(&thriftMetrics_->clients);
              }
              return metrics::serializeText(sources);
            },
        .metricsJson =
            [this] {
              return finagleMetrics(inboundMetrics_, controlMetrics_, announcerMetrics_,
                                    drain_.draining(), [this](boost::json::object& o) {
                                      if (directory_) {
                                        directory_->addFinagleMetrics(o);
                                      }
                                      if (thriftMetrics_) {
                                        addThriftFinagleMetrics(o, *thriftMetrics_);
                                      }
                                    });
            },
        .serverInfoJson = [this] { return serverInfoJson(started_); },
        .announcerJson =
            [this] {
              return announcement_ ? announcement_->statusJson()
                                   : std::string("{\"enabled\":false}\n");
            },
        .clientsJson =
            [this] { return directory_ ? directory_->clientsJson() : "{\"clients\":[]}\n"; },
    };
  }

  TlsFiles outboundFiles() const {
    return TlsFiles{config_.tlsCert, config_.tlsKey, config_.outbound->caFile};
  }

  // The sidecar's own certificate, rotated, is presented by new connections to members too.
  void reloadOutboundTls() {
    if (std::none_of(listeners_.begin(), listeners_.end(), [](const ListenerSpec& l) {
          return l.tls == ListenerSpec::Tls::client && !l.handlers->empty();
        })) {
      return;
    }
    auto client = makeClientTlsContext(outboundFiles(), "--outbound-ca");
    if (auto* error = std::get_if<std::string>(&client)) {
      spdlog::error("event=tls_reload_failed side=outbound error=\"{}\" action=kept_previous",
                    *error);
      return;
    }
    for (auto& l : listeners_) {
      if (l.tls == ListenerSpec::Tls::client) {
        l.handlers->setTls(std::get<TlsContext>(client).ssl);
      }
    }
  }

  DrainController::Steps drainSteps() {
    using Withdraw = decltype(DrainController::Steps::withdraw);
    return DrainController::Steps{
        // A sidecar that announces nothing has nothing to withdraw: it drains at once.
        .withdraw =
            !config_.announce ? Withdraw{} : Withdraw([this](std::function<void(bool)> done) {
              if (announcement_) {
                announcement_->withdraw(std::move(done));
              } else {
                done(false);  // a signal before the announcement started
              }
            }),
        .drainWorkers =
            [this](std::function<void()> oneDrained) {
              for (auto& w : workers_) {
                w->drain(oneDrained);
              }
              return workers_.size();
            },
        .finished =
            [this](const char*) {
              signals_.cancel();
              announcement_.reset();  // closes the session (its member is already gone)
              control_.stop();
            },
    };
  }

  void waitForSignal() {
    signals_.async_wait([this](const boost::system::error_code& ec, int signo) {
      if (ec) {
        return;
      }
      if (signo == SIGHUP) {
        tls_.reload("sighup");
      } else if (drain_.draining()) {
        spdlog::warn("event=forced_exit signal={}", signo);
        std::_Exit(1);
      } else {
        beginShutdown(signo == SIGTERM ? "sigterm" : "sigint", std::nullopt);
      }
      waitForSignal();
    });
  }

  void beginShutdown(const char* source, std::optional<Duration> grace) {
    if (drain_.draining()) {
      return;
    }
    controlMetrics_.draining->Set(1);
    tls_.stop();
    drain_.begin(source, grace);
  }

  const SidecarConfig& config_;
  asio::io_context control_{1};
  std::shared_ptr<prometheus::Registry> registry_;
  InboundMetrics inboundMetrics_;
  ControlMetrics controlMetrics_;
  AnnouncerMetrics announcerMetrics_;
  std::unique_ptr<AccessLog> accessLog_;  // before the workers: they write to it until they end
  std::optional<trace::TracerMetrics> traceMetrics_;
  std::unique_ptr<trace::Tracer> tracer_;  // --zipkin-url; before the workers, as the access log
  WorkerShared workerShared_;
  std::optional<InboundShared> inboundShared_;
  asio::signal_set signals_;
  asio::steady_timer abortTimer_;
  TlsReloader tls_;
  DrainController drain_;
  PlainHttpServer admin_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<ListenerSpec> listeners_;  // in the order bound; their handlers are the workers'
  ProxyLimits limits_;                   // --max-connections and the rest, resolved
  tcp::endpoint upstream_;
  tcp::endpoint grpcUpstream_;  // --upstream-grpc, else --upstream
  tcp::endpoint adminListen_;
  std::optional<OutboundMetrics> outboundMetrics_;
  std::optional<OutboundShared> outboundShared_;
  std::optional<ThriftOutboundMetrics> thriftOutMetrics_;
  std::optional<ThriftMetrics> thriftMetrics_;
  std::optional<ThriftShared> thriftShared_;
  std::optional<RouteDirectory> directory_;
  std::optional<Announcement> announcement_;
  std::chrono::system_clock::time_point started_ = std::chrono::system_clock::now();
  bool ready_ = false;
};

}  // namespace

int runSidecar(const SidecarConfig& config) {
  std::signal(SIGPIPE, SIG_IGN);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e%z %l %v");
  spdlog::set_level(spdlog::level::from_str(config.logLevel));
  Server server(config);
  return server.run();
}

}  // namespace sidecar
