// `arbiter replay`'s outcome log: JSON Lines, any of them malformed.
#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "gateway/cli/commands.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)arbiter::cli::ParseOutcomeLog(
      absl::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
