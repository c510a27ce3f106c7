#pragma once
// The C client's numbers in our types. Only zk_session.cpp (and its unit test) sees the C API;
// this header does not include it.

#include <registry/zk_session.h>

namespace registry::detail {

ZkError zkErrorFromCode(int rc);
ZkState zkStateFromCode(int state);
ZkEvent zkEventFromCode(int type);

}  // namespace registry::detail
