// The announcer's state machine: session events, health and deletions all lead to reconcile(),
// which makes ZooKeeper match what we want (a member while healthy, none otherwise).
#include "announcer.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <cstdio>

namespace registry {

namespace {

constexpr std::string_view kMemberPrefix = "member_";

std::string hexId(int64_t id) {
  char buf[20];
  std::snprintf(buf, sizeof(buf), "0x%llx", static_cast<unsigned long long>(id));
  return buf;
}

// The delay to wait now; the next one is twice as long, up to max.
std::chrono::milliseconds takeDelay(std::chrono::milliseconds& delay,
                                    std::chrono::milliseconds max) {
  auto now = delay;
  delay = std::min(delay * 2, max);
  return now;
}

}  // namespace

Announcer::Announcer(boost::asio::io_context& ioc, AnnouncerConfig config, AnnouncerEvents events,
                     ZkSessionFactory connect)
    : config_(std::move(config)),
      events_(std::move(events)),
      connect_(
          connect
              ? std::move(connect)
              : [&ioc](const ZkSessionOptions& o,
                       ZkSession::EventHandler h) { return openZkSession(ioc, o, std::move(h)); }),
      data_(encodeServiceInstance(config_.instance)),
      reopenTimer_(ioc),
      reconcileTimer_(ioc),
      shutdownTimer_(ioc),
      reopenDelay_(config_.firstRetryDelay),
      reconcileDelay_(config_.firstRetryDelay) {}

Announcer::~Announcer() = default;

void Announcer::start() { openSession(); }

void Announcer::openSession() {
  session_.reset();  // a new session, never a repaired one; the old one's completions are dropped
  reconcileTimer_.cancel();  // the new session reconciles when it connects
  busy_ = false;
  withdrawing_ = false;
  try {
    session_ =
        connect_({config_.connect, config_.sessionTimeout, config_.digest, config_.secureParents},
                 [this](ZkEvent event, ZkState state, const std::string& path) {
                   onEvent(event, state, path);
                 });
  } catch (const std::exception& e) {
    lastError_ = e.what();
    spdlog::error("event=zk_session_failed error=\"{}\"", lastError_);
    reopenTimer_.schedule(takeDelay(reopenDelay_, config_.maxRetryDelay),
                          [this] { openSession(); });
  }
}

void Announcer::onEvent(ZkEvent event, ZkState state, const std::string& path) {
  if (event == ZkEvent::Session) {
    if (events_.sessionState) {
      events_.sessionState(state);
    }
    switch (state) {
      case ZkState::Connected:
        spdlog::info("event=zk_connected session={} server={}", hexId(session_->sessionId()),
                     session_->connectedServer());
        reopenDelay_ = config_.firstRetryDelay;
        reconcileDelay_ = config_.firstRetryDelay;
        reconcile();
        break;
      case ZkState::Connecting:
        // Connection loss: the session and its member survive for the session timeout; wait.
        spdlog::warn("event=zk_disconnected action=waiting_for_reconnect");
        break;
      case ZkState::Expired:
        spdlog::warn("event=zk_session_expired member={} action=new_session", member_);
        lastError_ = std::string(zkErrorName(ZkError::SessionExpired));
        member_.clear();
        if (stopping_) {
          finishShutdown();  // the member went with the session: nothing left to withdraw
        } else {
          reopenTimer_.schedule(takeDelay(reopenDelay_, config_.maxRetryDelay),
                                [this] { openSession(); });
        }
        break;
      case ZkState::AuthFailed:
        lastError_ = "authentication failed (check --zk-auth-file)";
        spdlog::error("event=zk_auth_failed action=gave_up");
        break;
      case ZkState::Closed:
        break;
    }
    return;
  }
  if (event == ZkEvent::Deleted && path == member_ && !member_.empty() && !withdrawing_) {
    spdlog::warn("event=member_deleted member={} action=reannounce", member_);
    member_.clear();
    reconcile();
  }
}

void Announcer::setHealthy(bool healthy) {
  if (healthy_ == healthy) {
    return;
  }
  healthy_ = healthy;
  spdlog::info("event=local_service_{} action={}", healthy ? "healthy" : "unhealthy",
               healthy ? "announce" : "withdraw");
  reconcile();
}

// Each chain of ZooKeeper calls ends in succeeded() or failed(), which end the busy spell; a
// change that arrives meanwhile is picked up by the reconcile() that follows.
void Announcer::reconcile() {
  if (busy_ || !session_ || session_->state() != ZkState::Connected) {
    return;
  }
  const bool want = healthy_ && !stopping_;
  if (want && member_.empty()) {
    busy_ = true;
    ensureParents(1);
  } else if (!want && !member_.empty()) {
    busy_ = true;
    withdraw();
  } else if (stopping_ && member_.empty()) {
    finishShutdown();
  }
}

// Creates each ancestor of the serverset path in turn ("/a", "/a/b", ...), persistent and empty.
void Announcer::ensureParents(std::size_t depth) {
  auto next = config_.path.find('/', depth);
  std::string prefix = config_.path.substr(0, next);
  session_->create(prefix, "", ZkNodeKind::Persistent, [this, next](ZkError e, const std::string&) {
    if (e != ZkError::Ok && e != ZkError::NodeExists) {
      return failed("create_parent", e);
    }
    if (next == std::string::npos) {
      adoptOrCreate();
    } else {
      ensureParents(next + 1);
    }
  });
}

// A create whose answer was lost may have made our node already: adopt a member whose
// ephemeralOwner is this session instead of making a second one.
void Announcer::adoptOrCreate() {
  session_->children(config_.path, false, [this](ZkError e, std::vector<std::string> names) {
    if (e != ZkError::Ok) {
      return failed("list_members", e);
    }
    std::erase_if(names, [](const std::string& n) { return !n.starts_with(kMemberPrefix); });
    if (names.empty()) {
      return createMember();
    }
    struct Check {
      std::size_t pending;
      std::string found;
      ZkError error = ZkError::Ok;
    };
    auto check = std::make_shared<Check>(Check{names.size(), {}});
    const int64_t mine = session_->sessionId();
    for (const auto& name : names) {
      std::string full = config_.path + "/" + name;
      session_->exists(full, false, [this, check, full, mine](ZkError e, ZkStat stat) {
        if (e == ZkError::Ok && stat.ephemeralOwner == mine) {
          check->found = full;
        } else if (e != ZkError::Ok && e != ZkError::NoNode) {
          check->error = e;
        }
        if (--check->pending > 0) {
          return;
        }
        if (!check->found.empty()) {
          member_ = check->found;
          spdlog::info("event=member_adopted member={}", member_);
          session_->exists(member_, true, [](ZkError, ZkStat) {});
          return succeeded();
        }
        if (check->error != ZkError::Ok) {
          // An unread member might be ours: creating now could leave two.
          return failed("check_members", check->error);
        }
        createMember();
      });
    }
  });
}

void Announcer::createMember() {
  session_->create(config_.path + "/" + std::string(kMemberPrefix), data_,
                   ZkNodeKind::EphemeralSequential, [this](ZkError e, const std::string& created) {
                     if (e != ZkError::Ok) {
                       return failed("create_member", e);
                     }
                     member_ = created;
                     spdlog::info("event=announced member={} data={}", member_, data_);
                     if (everAnnounced_ && events_.reannounced) {
                       events_.reannounced();
                     }
                     if (events_.announced) {
                       events_.announced();
                     }
                     everAnnounced_ = true;
                     // Watch our own node, so that a deletion by someone else re-announces.
                     session_->exists(member_, true, [](ZkError, ZkStat) {});
                     succeeded();
                   });
}

void Announcer::withdraw() {
  withdrawing_ = true;  // our own delete fires our own watch; that is not someone else's
  session_->remove(member_, [this](ZkError e) {
    withdrawing_ = false;
    if (e != ZkError::Ok && e != ZkError::NoNode) {
      return failed("delete_member", e);
    }
    spdlog::info("event=withdrawn member={}", member_);
    member_.clear();
    if (events_.withdrawn) {
      events_.withdrawn();
    }
    succeeded();
  });
}

void Announcer::succeeded() {
  busy_ = false;
  lastError_.clear();
  reconcileDelay_ = config_.firstRetryDelay;
  reconcile();
}

void Announcer::failed(const char* step, ZkError e) {
  busy_ = false;
  lastError_ = std::string(step) + ": " + std::string(zkErrorName(e));
  // NoNode: the serverset was deleted under us; the next attempt makes it again.
  if (!retryable(e) && e != ZkError::NoNode) {
    // Retrying cannot help: say so and stay withdrawn; the data path keeps serving. A reconnect
    // or a change of health tries again.
    spdlog::error("event=announce_failed step={} error=\"{}\" action=gave_up", step,
                  zkErrorName(e));
    if (stopping_) {
      finishShutdown();
    }
    return;
  }
  spdlog::warn("event=announce_failed step={} error=\"{}\" action=retry", step, zkErrorName(e));
  if (e == ZkError::SessionExpired) {
    return;  // the session event opens a new session
  }
  reconcileTimer_.schedule(takeDelay(reconcileDelay_, config_.maxRetryDelay),
                           [this] { reconcile(); });
}

void Announcer::shutdown(std::chrono::milliseconds timeout, std::function<void()> done) {
  stopping_ = true;
  onStopped_ = std::move(done);
  shutdownTimer_.schedule(timeout, [this] {
    spdlog::warn("event=withdraw_timeout member={} action=continue_shutdown", member_);
    finishShutdown();
  });
  if (member_.empty()) {
    return finishShutdown();
  }
  reconcile();
}

void Announcer::finishShutdown() {
  shutdownTimer_.cancel();
  reopenTimer_.cancel();
  reconcileTimer_.cancel();
  if (auto done = std::exchange(onStopped_, {})) {
    done();
  }
}

std::string Announcer::statusJson() const {
  boost::json::object o;
  o["zk"] = config_.connect;
  o["path"] = config_.path;
  o["member"] = member_.empty() ? boost::json::value(nullptr) : boost::json::value(member_);
  o["session"] = session_ ? zkStateName(session_->state()) : "closed";
  o["session_id"] = session_ ? hexId(session_->sessionId()) : "";
  o["server"] =
      session_ && session_->state() == ZkState::Connected ? session_->connectedServer() : "";
  o["healthy"] = healthy_;
  o["status"] = stopping_          ? "stopping"
                : !member_.empty() ? "announced"
                : healthy_         ? "announcing"
                                   : "waiting_for_health";
  o["data"] = data_;
  // No server reachable says more than the last step that failed (or nothing at all, before the
  // first session ever connected).
  std::string lastError = lastError_;
  if (session_ && session_->state() != ZkState::Connected) {
    if (auto why = session_->unreachableReason(); !why.empty()) {
      lastError = "zookeeper unreachable: " + why;
    }
  }
  o["last_error"] = lastError;
  return boost::json::serialize(o) + "\n";
}

}  // namespace registry
