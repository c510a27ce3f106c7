#pragma once
// The sidecar process: workers on the data path, and the control thread that owns the admin
// interface, signals, certificate reloads and the drain on shutdown.

#include "core/config.h"

namespace sidecar {

// Runs until shutdown; returns the process exit code (0 after a clean drain, 2 for a bad
// configuration found at start-up).
int runSidecar(const SidecarConfig& config);

}  // namespace sidecar
