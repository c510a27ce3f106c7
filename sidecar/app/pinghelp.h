#pragma once
// pinghelp, the reference local service: /ping answers pong, /help describes the methods, from
// the help files under proto/help.

#include "app/help.h"
#include "http/plain_server.h"

namespace sidecar {

PlainResponse handlePinghelpRequest(const PlainRequest& req, const HelpCatalog& catalog);

}  // namespace sidecar
