#pragma once
// An in-memory ZooKeeper behind the registry's ZkSession seam: one tree shared by the sessions a
// test makes, exists and children watches, ephemeral nodes that go with their session, faults the
// test injects, and completions that the test may hold back to order them against session events.
// Like the real session it runs everything on the io_context, never inside the call, and never
// after the session is gone.

#include <registry/zk_session.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <chrono>
#include <cstdio>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace registry::testing {

class FakeZk {
 public:
  struct Node {
    std::string data;
    int64_t owner = 0;     // the ephemeral node's session, else 0
    int32_t cversion = 0;  // its children's creations and deletions
    int64_t pzxid = 0;     // the transaction of the last of them
  };

  explicit FakeZk(boost::asio::io_context& ioc) : ioc_(ioc) { nodes_["/"] = {}; }

  ZkSessionFactory factory() {
    return [this](const ZkSessionOptions& options, ZkSession::EventHandler onEvent) {
      ++opened_;
      lastOptions = options;
      return std::make_unique<Session>(*this, ++lastId_, std::move(onEvent));
    };
  }

  // Session control: the newest session connects, loses its connection, or expires.
  void connect() { setState(ZkState::Connected); }
  void disconnect() { setState(ZkState::Connecting); }
  void expire() {
    Session* s = newest();
    s->serverState = ZkState::Expired;
    unwatch(s);
    dropEphemerals(s->id);
    s->event(ZkEvent::Session, ZkState::Expired, "");
  }

  // Another client's writes; watches fire.
  void put(const std::string& path, const std::string& data, int64_t owner = 0) {
    const bool created = !has(path);
    auto& n = nodes_[path];
    n.data = data;
    n.owner = owner;
    if (created) {
      childChanged(path);
    }
    fire(path, ZkEvent::Created);
  }
  void erase(const std::string& path) {
    nodes_.erase(path);
    childChanged(path);
    fire(path, ZkEvent::Deleted);
  }

  bool has(const std::string& path) const { return nodes_.count(path) > 0; }
  const Node& node(const std::string& path) const { return nodes_.at(path); }
  std::vector<std::string> childrenOf(const std::string& path) const {
    std::vector<std::string> out;
    const std::string prefix = path == "/" ? "/" : path + "/";
    for (const auto& [p, n] : nodes_) {
      if (p.size() > prefix.size() && p.starts_with(prefix) &&
          p.find('/', prefix.size()) == std::string::npos) {
        out.push_back(p.substr(prefix.size()));
      }
    }
    return out;
  }

  // The next operation named op ("create", "remove", "exists", "get", "children") on a path
  // starting with prefix fails with error, and does nothing.
  void failNext(std::string op, ZkError error, std::string prefix = "/") {
    faults_.push_back({std::move(op), std::move(prefix), error});
  }

  // While holding, completions and events wait in order until released.
  bool holding = false;
  std::size_t held() const { return held_.size(); }
  // Releases everything held; completions answer `instead` when given (an answer that was on
  // its way when the connection broke, say).
  void release(std::optional<ZkError> instead = std::nullopt) {
    auto all = std::exchange(held_, {});
    for (auto& h : all) {
      boost::asio::post(ioc_, [h = std::move(h), instead]() mutable { h(instead); });
    }
  }

  int opened() const { return opened_; }
  // Watches the server holds now, of every session (ZooKeeper's zk_watch_count).
  std::size_t watchCount() const {
    std::size_t n = 0;
    for (const auto* m : {&existsWatches_, &childWatches_}) {
      for (const auto& [p, set] : *m) {
        n += set.size();
      }
    }
    return n;
  }
  int64_t newestId() const { return lastId_; }
  std::vector<std::string> calls;  // "create /a", in the order made
  ZkSessionOptions lastOptions;

 private:
  class Session;
  using Held = std::function<void(std::optional<ZkError>)>;
  struct Fault {
    std::string op, prefix;
    ZkError error;
  };

  class Session final : public ZkSession {
   public:
    Session(FakeZk& zk, int64_t id, EventHandler onEvent)
        : zk_(zk), id(id), onEvent_(std::move(onEvent)) {
      zk_.live_.push_back(this);
    }
    ~Session() override {
      *alive_ = false;
      std::erase(zk_.live_, this);
      zk_.unwatch(this);
      if (serverState != ZkState::Expired) {
        zk_.dropEphemerals(id);  // closing a session ends it on the server
      }
    }

    ZkState state() const override { return state_; }
    int64_t sessionId() const override { return id; }
    std::string connectedServer() const override {
      return state_ == ZkState::Connected ? "fake:2181" : "";
    }

    void create(const std::string& path, const std::string& data, ZkNodeKind kind,
                std::function<void(ZkError, std::string)> done) override {
      answer("create", path, done, [&]() -> std::pair<ZkError, std::string> {
        std::string made = path;
        if (kind == ZkNodeKind::EphemeralSequential) {
          char seq[16];
          std::snprintf(seq, sizeof(seq), "%010d", zk_.sequence_++);
          made += seq;
        }
        const auto slash = made.rfind('/');
        const std::string parent = slash == 0 ? "/" : made.substr(0, slash);
        if (!zk_.has(parent)) {
          return {ZkError::NoNode, ""};
        }
        if (zk_.has(made)) {
          return {ZkError::NodeExists, ""};
        }
        zk_.put(made, data, kind == ZkNodeKind::EphemeralSequential ? id : 0);
        return {ZkError::Ok, made};
      });
    }
    void remove(const std::string& path, std::function<void(ZkError)> done) override {
      answer("remove", path, done, [&]() -> std::tuple<ZkError> {
        if (!zk_.has(path)) {
          return {ZkError::NoNode};
        }
        zk_.erase(path);
        return {ZkError::Ok};
      });
    }
    void exists(const std::string& path, bool watch,
                std::function<void(ZkError, ZkStat)> done) override {
      answer("exists", path, done, [&]() -> std::pair<ZkError, ZkStat> {
        if (watch) {
          zk_.existsWatches_[path].insert(this);
        }
        if (!zk_.has(path)) {
          return {ZkError::NoNode, {}};
        }
        return {ZkError::Ok, ZkStat{zk_.node(path).owner}};
      });
    }
    void get(const std::string& path, bool,
             std::function<void(ZkError, std::string)> done) override {
      answer("get", path, done, [&]() -> std::pair<ZkError, std::string> {
        if (!zk_.has(path)) {
          return {ZkError::NoNode, ""};
        }
        return {ZkError::Ok, zk_.node(path).data};
      });
    }
    void removeWatches(const std::string& path) override {
      zk_.calls.push_back("removeWatches " + path);
      zk_.existsWatches_[path].erase(this);
      zk_.childWatches_[path].erase(this);
    }
    void children(const std::string& path, bool watch,
                  std::function<void(ZkError, std::vector<std::string>)> done) override {
      answer("children", path, done, [&]() -> std::pair<ZkError, std::vector<std::string>> {
        if (!zk_.has(path)) {
          return {ZkError::NoNode, {}};
        }
        if (watch) {
          zk_.childWatches_[path].insert(this);
        }
        return {ZkError::Ok, zk_.childrenOf(path)};
      });
    }

    // Answers as a "children" operation: failNext("children") applies to it too.
    void children2(const std::string& path, bool watch,
                   std::function<void(ZkError, std::vector<std::string>, ZkStat)> done) override {
      using R = std::tuple<ZkError, std::vector<std::string>, ZkStat>;
      answer("children", path, done, [&]() -> R {
        if (!zk_.has(path)) {
          return {ZkError::NoNode, {}, {}};
        }
        if (watch) {
          zk_.childWatches_[path].insert(this);
        }
        const auto& n = zk_.node(path);
        auto names = zk_.childrenOf(path);
        ZkStat stat{n.owner, n.cversion, n.pzxid, static_cast<int32_t>(names.size())};
        return {ZkError::Ok, std::move(names), stat};
      });
    }

    // Runs on the io_context later (or when released), unless this session is gone by then.
    void deliver(Held h) {
      auto wrapped = [alive = std::weak_ptr<bool>(alive_),
                      h = std::move(h)](std::optional<ZkError> instead) {
        if (auto a = alive.lock(); a && *a) {
          h(instead);
        }
      };
      if (zk_.holding) {
        zk_.held_.push_back(std::move(wrapped));
      } else {
        boost::asio::post(zk_.ioc_, [wrapped = std::move(wrapped)] { wrapped(std::nullopt); });
      }
    }

    void event(ZkEvent e, ZkState s, const std::string& path) {
      deliver([this, e, s, path](std::optional<ZkError>) {
        if (e == ZkEvent::Session) {
          state_ = s;
        }
        onEvent_(e, s, path);
      });
    }

    FakeZk& zk_;
    const int64_t id;
    ZkState serverState = ZkState::Connecting;  // what the server knows, ahead of the events

   private:
    // Applies op now (as the server would), answers on the io_context.
    template <class Done, class Op>
    void answer(const char* name, const std::string& path, Done& done, Op op) {
      zk_.calls.push_back(std::string(name) + " " + path);
      auto result = [&] {
        if (serverState == ZkState::Expired) {
          return failure<decltype(op())>(ZkError::SessionExpired);
        }
        if (serverState != ZkState::Connected) {
          return failure<decltype(op())>(ZkError::ConnectionLoss);
        }
        for (auto it = zk_.faults_.begin(); it != zk_.faults_.end(); ++it) {
          if (it->op == name && path.starts_with(it->prefix)) {
            auto e = it->error;
            zk_.faults_.erase(it);
            return failure<decltype(op())>(e);
          }
        }
        return op();
      }();
      deliver([done = std::move(done), result](std::optional<ZkError> instead) mutable {
        if (instead) {
          std::get<0>(result) = *instead;
        }
        std::apply(done, result);
      });
    }
    template <class R>
    static R failure(ZkError e) {
      R r{};
      std::get<0>(r) = e;
      return r;
    }

    ZkState state_ = ZkState::Connecting;  // what the owner has been told
    EventHandler onEvent_;
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  };

  Session* newest() { return live_.empty() ? nullptr : live_.back(); }

  void setState(ZkState s) {
    Session* session = newest();
    session->serverState = s;
    session->event(ZkEvent::Session, s, "");
  }

  void fire(const std::string& path, ZkEvent e) {
    for (Session* s : std::exchange(existsWatches_[path], {})) {
      s->event(e, ZkState::Connected, path);
    }
    const auto slash = path.rfind('/');
    const std::string parent = slash == 0 ? "/" : path.substr(0, slash);
    for (Session* s : std::exchange(childWatches_[parent], {})) {
      s->event(ZkEvent::ChildrenChanged, ZkState::Connected, parent);
    }
  }

  void childChanged(const std::string& path) {
    const auto slash = path.rfind('/');
    const std::string parent = slash == 0 ? "/" : path.substr(0, slash);
    if (auto it = nodes_.find(parent); it != nodes_.end() && path != "/") {
      ++it->second.cversion;
      it->second.pzxid = ++zxid_;
    }
  }

  void dropEphemerals(int64_t id) {
    std::vector<std::string> gone;
    for (const auto& [p, n] : nodes_) {
      if (n.owner == id) {
        gone.push_back(p);
      }
    }
    for (const auto& p : gone) {
      erase(p);
    }
  }

  void unwatch(Session* s) {
    for (auto& [p, set] : existsWatches_) {
      set.erase(s);
    }
    for (auto& [p, set] : childWatches_) {
      set.erase(s);
    }
  }

  boost::asio::io_context& ioc_;
  std::map<std::string, Node> nodes_;
  std::map<std::string, std::set<Session*>> existsWatches_, childWatches_;
  std::vector<Session*> live_;
  std::deque<Fault> faults_;
  std::vector<Held> held_;
  int opened_ = 0;
  int64_t lastId_ = 0x100;
  int sequence_ = 0;
  int64_t zxid_ = 0;
};

// Runs the io_context until pred holds or limit passes; true if it holds.
inline bool runUntil(boost::asio::io_context& ioc, const std::function<bool()>& pred,
                     std::chrono::milliseconds limit = std::chrono::milliseconds(1'000)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) {
      return false;
    }
    ioc.restart();
    ioc.run_for(std::chrono::milliseconds(2));
  }
  return true;
}

// Runs whatever is ready now, including what that makes ready, without waiting on timers.
inline void settle(boost::asio::io_context& ioc) {
  ioc.restart();
  while (ioc.poll() > 0) {
    ioc.restart();
  }
}

}  // namespace registry::testing
