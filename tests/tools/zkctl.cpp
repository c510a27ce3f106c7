// zkctl: a tiny ZooKeeper client for the tests, playing "another client" (the C client's
// synchronous API). Not shipped.
//   zkctl HOSTS ls PATH                 children, one per line
//   zkctl HOSTS get PATH                data, then a line "ephemeralOwner=0x..."
//   zkctl HOSTS create PATH DATA        persistent node (parents must exist)
//   zkctl HOSTS delete PATH
//   zkctl HOSTS getacl PATH             one line per ACL: scheme:id:perms
// Exit codes: 0 ok, 1 ZooKeeper error (printed), 2 usage.
#include <zookeeper/zookeeper.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: zkctl HOSTS ls|get|create|delete|getacl PATH [DATA]\n");
    return 2;
  }
  zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);
  zhandle_t* zh = zookeeper_init(argv[1], nullptr, 10000, nullptr, nullptr, 0);
  if (!zh) {
    std::perror("zookeeper_init");
    return 1;
  }
  for (int i = 0; i < 100 && zoo_state(zh) != ZOO_CONNECTED_STATE; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::string op = argv[2];
  const char* path = argv[3];
  int rc = ZOK;
  if (op == "ls") {
    String_vector children{};
    rc = zoo_get_children(zh, path, 0, &children);
    for (int i = 0; rc == ZOK && i < children.count; ++i) {
      std::printf("%s\n", children.data[i]);
    }
    deallocate_String_vector(&children);
  } else if (op == "get") {
    char buf[65536];
    int len = sizeof(buf);
    Stat stat{};
    rc = zoo_get(zh, path, 0, buf, &len, &stat);
    if (rc == ZOK) {
      std::printf("%.*s\nephemeralOwner=0x%llx\n", len < 0 ? 0 : len, buf,
                  static_cast<unsigned long long>(stat.ephemeralOwner));
    }
  } else if (op == "create" && argc == 5) {
    rc = zoo_create(zh, path, argv[4], static_cast<int>(std::strlen(argv[4])), &ZOO_OPEN_ACL_UNSAFE,
                    ZOO_PERSISTENT, nullptr, 0);
  } else if (op == "delete") {
    rc = zoo_delete(zh, path, -1);
  } else if (op == "getacl") {
    ACL_vector acl{};
    Stat stat{};
    rc = zoo_get_acl(zh, path, &acl, &stat);
    for (int i = 0; rc == ZOK && i < acl.count; ++i) {
      std::printf("%s:%s:%d\n", acl.data[i].id.scheme, acl.data[i].id.id, acl.data[i].perms);
    }
    deallocate_ACL_vector(&acl);
  } else {
    std::fprintf(stderr, "zkctl: unknown operation '%s'\n", op.c_str());
    zookeeper_close(zh);
    return 2;
  }
  if (rc != ZOK) {
    std::fprintf(stderr, "zkctl: %s %s: %s\n", op.c_str(), path, zerror(rc));
  }
  zookeeper_close(zh);
  return rc == ZOK ? 0 : 1;
}
