// The HTTP front's request bodies: chat completions (with arbiter's
// headers), embeddings and feedback.
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/strings/string_view.h"
#include "gateway/openai/chat_request.h"
#include "gateway/openai/endpoints.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view body(reinterpret_cast<const char*>(data), size);
  (void)arbiter::openai::ParseChatCompletionRequest(body);
  // The same body with arbiter's headers taken from its first line.
  const absl::string_view header = body.substr(0, body.find('\n'));
  const std::pair<absl::string_view, absl::string_view> headers[] = {
      {"x-arbiter-task", header},         {"x-arbiter-max-cost-usd", header},
      {"x-arbiter-min-accuracy", header}, {"x-arbiter-timeout-ms", header},
      {"x-arbiter-unit-id", header},      {"x-arbiter-allow-fallback", header}};
  (void)arbiter::openai::ParseChatCompletionRequest(body, headers);
  (void)arbiter::openai::ParseEmbeddingsRequest(body);
  (void)arbiter::openai::ParseFeedbackRequest(body);
  return 0;
}
