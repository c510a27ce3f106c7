#include "shared_session.h"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <set>
#include <utility>
#include <vector>

namespace registry {

namespace {
class View;
}

// The underlying session and the views of it alive now.
struct SharedZkSessions::Core {
  std::unique_ptr<ZkSession> session;
  std::vector<View*> views;

  void dispatch(ZkEvent event, ZkState state, const std::string& path);
  // Whether a view alive now watches path.
  bool watches(const std::string& path) const;
};

namespace {

class View final : public ZkSession {
 public:
  View(boost::asio::io_context& ioc, std::shared_ptr<SharedZkSessions::Core> core,
       EventHandler onEvent)
      : core_(std::move(core)), onEvent_(std::make_shared<EventHandler>(std::move(onEvent))) {
    core_->views.push_back(this);
    // A reader starts on a Connected event: one that joins a session already past connecting
    // is told where it stands, as a session of its own would tell it (never inside this call):
    // the state when the post runs, unless the session has spoken to this view meanwhile.
    if (core_->session->state() != ZkState::Connecting) {
      boost::asio::post(ioc, [alive = std::weak_ptr<bool>(alive_), this] {
        if (alive.lock() && !told_) {
          const ZkState now = core_->session->state();
          if (now != ZkState::Connecting) {
            deliver(ZkEvent::Session, now, "");
          }
        }
      });
    }
  }
  ~View() override {
    std::erase(core_->views, this);
    // Its watches would fire for no one (and cost the ensemble a watch each, for the session's
    // life): removed, unless another reader watches the same path.
    for (const auto& path : watched_) {
      if (!core_->watches(path)) {
        core_->session->removeWatches(path);
      }
    }
  }
  bool watches(const std::string& path) const { return watched_.count(path) > 0; }

  ZkState state() const override { return core_->session->state(); }
  int64_t sessionId() const override { return core_->session->sessionId(); }
  std::string connectedServer() const override { return core_->session->connectedServer(); }
  std::string unreachableReason() const override { return core_->session->unreachableReason(); }

  void create(const std::string& path, const std::string& data, ZkNodeKind kind,
              std::function<void(ZkError, std::string)> done) override {
    core_->session->create(path, data, kind, guard(std::move(done)));
  }
  void remove(const std::string& path, std::function<void(ZkError)> done) override {
    core_->session->remove(path, guard(std::move(done)));
  }
  void exists(const std::string& path, bool watch,
              std::function<void(ZkError, ZkStat)> done) override {
    watching(path, watch);
    core_->session->exists(path, watch, guard(std::move(done)));
  }
  void get(const std::string& path, bool watch,
           std::function<void(ZkError, std::string)> done) override {
    watching(path, watch);
    core_->session->get(path, watch, guard(std::move(done)));
  }
  void children(const std::string& path, bool watch,
                std::function<void(ZkError, std::vector<std::string>)> done) override {
    watching(path, watch);
    core_->session->children(path, watch, guard(std::move(done)));
  }
  void children2(const std::string& path, bool watch,
                 std::function<void(ZkError, std::vector<std::string>, ZkStat)> done) override {
    watching(path, watch);
    core_->session->children2(path, watch, guard(std::move(done)));
  }
  void removeWatches(const std::string& path) override {
    watched_.erase(path);
    if (!core_->watches(path)) {
      core_->session->removeWatches(path);
    }
  }

  void deliver(ZkEvent event, ZkState state, const std::string& path) {
    // The handler may destroy this view: it runs from a copy that outlives it.
    const auto handler = onEvent_;
    if (event == ZkEvent::Session) {
      told_ = true;
      if (state == ZkState::Expired) {
        watched_.clear();  // an expired session's watches are gone with it
      }
      return (*handler)(event, state, path);
    }
    // ZooKeeper's watches fire once: the reader sets it again when it reads again.
    if (watched_.erase(path) > 0) {
      (*handler)(event, state, path);
    }
  }

 private:
  void watching(const std::string& path, bool watch) {
    if (watch) {
      watched_.insert(path);
    }
  }
  // A completion that arrives after this view is gone is dropped (the session's contract).
  template <class... Args>
  std::function<void(Args...)> guard(std::function<void(Args...)> done) {
    return [alive = std::weak_ptr<bool>(alive_), done = std::move(done)](Args... args) {
      if (alive.lock()) {
        done(std::move(args)...);
      }
    };
  }

  std::shared_ptr<SharedZkSessions::Core> core_;
  std::shared_ptr<EventHandler> onEvent_;
  bool told_ = false;  // a Session event reached this view
  std::set<std::string> watched_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace

void SharedZkSessions::Core::dispatch(ZkEvent event, ZkState state, const std::string& path) {
  // A handler may destroy its own view (a reader replacing an expired session) or another's.
  const auto now = views;
  for (View* v : now) {
    if (std::find(views.begin(), views.end(), v) != views.end()) {
      v->deliver(event, state, path);
    }
  }
}

bool SharedZkSessions::Core::watches(const std::string& path) const {
  return std::any_of(views.begin(), views.end(), [&](const View* v) { return v->watches(path); });
}

SharedZkSessions::SharedZkSessions(boost::asio::io_context& ioc, ZkSessionFactory real)
    : ioc_(ioc), real_(std::move(real)) {
  if (!real_) {
    real_ = [this](const ZkSessionOptions& o, ZkSession::EventHandler h) {
      return openZkSession(ioc_, o, std::move(h));
    };
  }
}

ZkSessionFactory SharedZkSessions::factory() {
  return [this](const ZkSessionOptions& options,
                ZkSession::EventHandler onEvent) -> std::unique_ptr<ZkSession> {
    const std::string key = options.connect + '\n' + std::to_string(options.timeout.count()) +
                            '\n' + options.digest + (options.secureParents ? "\ns" : "");
    auto core = cores_[key].lock();
    // An expired session is never repaired, nor one whose credentials were refused or that
    // closed: a new one, for this reader and those that follow.
    const auto dead = [](ZkState st) {
      return st == ZkState::Expired || st == ZkState::AuthFailed || st == ZkState::Closed;
    };
    if (!core || dead(core->session->state())) {
      core = std::make_shared<Core>();
      core->session = real_(options, [this, weak = std::weak_ptr<Core>(core)](
                                         ZkEvent e, ZkState s, const std::string& path) {
        if (auto c = weak.lock()) {
          c->dispatch(e, s, path);
          if (c.use_count() == 1) {
            // Its last view went during this event: the session is not destroyed inside its own
            // callback, but next.
            boost::asio::post(ioc_, [c = std::move(c)] {});
          }
        }
      });
      cores_[key] = core;
    }
    std::erase_if(cores_, [](const auto& kv) { return kv.second.expired(); });
    return std::make_unique<View>(ioc_, std::move(core), std::move(onEvent));
  };
}

std::size_t SharedZkSessions::open() const {
  return static_cast<std::size_t>(std::count_if(
      cores_.begin(), cores_.end(), [](const auto& kv) { return !kv.second.expired(); }));
}

}  // namespace registry
