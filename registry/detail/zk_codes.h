#pragma once
// The C client's numbers in our types. Only zk_session.cpp (and its unit test) sees the C API;
// this header does not include it.

#include <registry/zk_session.h>

#include <string>
#include <string_view>

namespace registry::detail {

ZkError zkErrorFromCode(int rc);
ZkState zkStateFromCode(int state);
ZkEvent zkEventFromCode(int type);

// One line of the C client's own log ("2024-...:123(0x7f..):ZOO_ERROR@check_events@2985: Socket
// 127.0.0.1:2181 zk retcode=-4, errno=111(Connection refused): server refused ..."), read for
// what an operator needs.
struct ZkClientMessage {
  std::string level;         // "ERROR", "WARN"; empty when the line has no ZOO_ prefix
  std::string text;          // what follows "ZOO_LEVEL@function@line: "
  std::string error;         // the errno's words ("Connection refused"), else the text
  bool unreachable = false;  // a server could not be resolved, connected to or read from
};
ZkClientMessage parseZkClientMessage(std::string_view line);

}  // namespace registry::detail
