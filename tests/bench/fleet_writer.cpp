// fleet-writer: the announcers of a fleet, in one process, for tests/bench/fleet.py. It keeps
// members of one serverset (Finagle JSON from registry/serverset.cpp, ephemeral sequential nodes,
// spread over several ZooKeeper sessions as announcers on different hosts would be) and churns
// them on command. Not part of the product.
//
//   fleet-writer HOSTS PATH SESSIONS
// then commands on stdin, one per line; each answers one line on stdout (times are wall-clock
// seconds, CLOCK_REALTIME, as the sidecar's log lines are stamped):
//   fill N             creates N members, pipelined       -> "filled N SECONDS"
//   create             one member, waits for it           -> "create T0 T1 NAME"
//   delete             the newest member still there      -> "delete T0 T1 NAME"
//   quit               closes the sessions (the members go with them)
// T0 is when the request left, T1 when ZooKeeper acknowledged it.
#include <zookeeper/zookeeper.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "registry/serverset.h"

namespace {

double wallNow() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// Counts outstanding asynchronous creates; the names they made, in order of completion.
struct Pending {
  std::mutex mutex;
  std::condition_variable done;
  int outstanding = 0;
  int failed = 0;
  std::vector<std::pair<zhandle_t*, std::string>>* made = nullptr;
  zhandle_t* zh = nullptr;
};

struct CreateContext {
  Pending* pending;
  zhandle_t* zh;
};

void created(int rc, const char* value, const void* data) {
  auto* c = static_cast<CreateContext*>(const_cast<void*>(data));
  {
    std::lock_guard lock(c->pending->mutex);
    if (rc == ZOK && value) {
      c->pending->made->emplace_back(c->zh, value);
    } else {
      ++c->pending->failed;
      std::fprintf(stderr, "fleet-writer: create: %s\n", zerror(rc));
    }
    --c->pending->outstanding;
  }
  c->pending->done.notify_all();
  delete c;
}

std::string memberData(int index) {
  // A distinct address per member (10.x.y.z:8080): the callers' sets are sets of addresses.
  registry::ServiceInstance instance;
  const std::string host = "10." + std::to_string((index >> 16) & 255) + "." +
                           std::to_string((index >> 8) & 255) + "." + std::to_string(index & 255);
  instance.serviceEndpoint = registry::Endpoint{host, 8080};
  instance.additionalEndpoints.emplace_back("http", registry::Endpoint{host, 8080});
  instance.shard = index;
  return registry::encodeServiceInstance(instance);
}

void ensurePath(zhandle_t* zh, const std::string& path) {
  for (std::size_t at = 1; at <= path.size(); ++at) {
    if (at == path.size() || path[at] == '/') {
      const std::string prefix = path.substr(0, at);
      const int rc =
          zoo_create(zh, prefix.c_str(), "", 0, &ZOO_OPEN_ACL_UNSAFE, ZOO_PERSISTENT, nullptr, 0);
      if (rc != ZOK && rc != ZNODEEXISTS) {
        std::fprintf(stderr, "fleet-writer: create %s: %s\n", prefix.c_str(), zerror(rc));
        std::exit(1);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: fleet-writer HOSTS PATH SESSIONS\n");
    return 2;
  }
  zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);
  const std::string path = argv[2];
  std::vector<zhandle_t*> sessions;
  for (int i = 0; i < std::max(1, std::atoi(argv[3])); ++i) {
    zhandle_t* zh = zookeeper_init(argv[1], nullptr, 30000, nullptr, nullptr, 0);
    for (int t = 0; zh && t < 400 && zoo_state(zh) != ZOO_CONNECTED_STATE; ++t) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    if (!zh || zoo_state(zh) != ZOO_CONNECTED_STATE) {
      std::fprintf(stderr, "fleet-writer: cannot connect to %s\n", argv[1]);
      return 1;
    }
    sessions.push_back(zh);
  }
  ensurePath(sessions[0], path);
  const std::string prefix = path + "/member_";
  std::vector<std::pair<zhandle_t*, std::string>> members;  // oldest first
  Pending pending;
  pending.made = &members;
  int next = 0;
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.rfind("fill ", 0) == 0) {
      const int n = std::atoi(line.c_str() + 5);
      const double start = wallNow();
      for (int i = 0; i < n; ++i) {
        zhandle_t* zh = sessions[static_cast<std::size_t>(next) % sessions.size()];
        const std::string data = memberData(next++);
        {
          std::unique_lock lock(pending.mutex);
          // A bounded pipeline: enough to keep the ensemble busy, not its queues full.
          pending.done.wait(lock, [&] { return pending.outstanding < 500; });
          ++pending.outstanding;
        }
        zoo_acreate(zh, prefix.c_str(), data.data(), static_cast<int>(data.size()),
                    &ZOO_OPEN_ACL_UNSAFE, ZOO_EPHEMERAL_SEQUENTIAL, created,
                    new CreateContext{&pending, zh});
      }
      std::unique_lock lock(pending.mutex);
      pending.done.wait(lock, [&] { return pending.outstanding == 0; });
      std::printf("filled %zu %.3f\n", members.size(), wallNow() - start);
    } else if (line == "create") {
      zhandle_t* zh = sessions[static_cast<std::size_t>(next) % sessions.size()];
      const std::string data = memberData(next++);
      char made[512];
      const double t0 = wallNow();
      const int rc = zoo_create(zh, prefix.c_str(), data.data(), static_cast<int>(data.size()),
                                &ZOO_OPEN_ACL_UNSAFE, ZOO_EPHEMERAL_SEQUENTIAL, made, sizeof(made));
      const double t1 = wallNow();
      if (rc != ZOK) {
        std::printf("error create %s\n", zerror(rc));
      } else {
        std::lock_guard lock(pending.mutex);
        members.emplace_back(zh, made);
        std::printf("create %.6f %.6f %s\n", t0, t1, made + path.size() + 1);
      }
    } else if (line == "delete") {
      std::pair<zhandle_t*, std::string> victim;
      {
        std::lock_guard lock(pending.mutex);
        if (members.empty()) {
          std::printf("error delete none\n");
          std::fflush(stdout);
          continue;
        }
        victim = members.back();
        members.pop_back();
      }
      const double t0 = wallNow();
      const int rc = zoo_delete(victim.first, victim.second.c_str(), -1);
      const double t1 = wallNow();
      if (rc != ZOK) {
        std::printf("error delete %s\n", zerror(rc));
      } else {
        std::printf("delete %.6f %.6f %s\n", t0, t1, victim.second.c_str() + path.size() + 1);
      }
    } else if (line == "quit") {
      break;
    } else {
      std::printf("error unknown %s\n", line.c_str());
    }
    std::fflush(stdout);
  }
  for (auto* zh : sessions) {
    zookeeper_close(zh);
  }
  return 0;
}
