// A backend's streamed answer: Server-Sent Events cut into chunks at
// arbitrary places (as the network cuts them), each event read as the
// backend reads it. The first byte chooses the chunk size.
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/sse.h"
#include "gateway/backends/openai_answer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t chunk = 1 + data[0] % 64;
  absl::string_view stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  arbiter::sse::Parser parser(/*max_event_bytes=*/4096);
  while (!stream.empty()) {
    const absl::string_view piece = stream.substr(0, chunk);
    stream.remove_prefix(piece.size());
    absl::Status fed = parser.Feed(piece, [](absl::string_view event) {
      return arbiter::ParseStreamEvent(event).status();
    });
    if (!fed.ok()) break;
  }
  (void)parser.in_event();
  return 0;
}
