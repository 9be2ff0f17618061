// arbiter: an inference gateway that picks, per request, a prompted,
// fine-tuned or RAG route from live cost and accuracy figures.

#include "absl/synchronization/mutex.h"
#include "gateway/cli/command_line.h"

int main(int argc, char** argv) {
#ifdef NDEBUG
  // Debian's Abseil is built without NDEBUG, so every absl::Mutex::Lock
  // (gRPC's locks among them) would look for lock-order cycles under one
  // process-wide spin lock: several times the cost of the lock itself.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  arbiter::cli::CommandLine command_line;
  return command_line.Main(argc, argv);
}
