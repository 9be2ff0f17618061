// A backend's unary answer, read both ways: the one-pass reader and the DOM
// reader must agree on every input (what they accept, and what they read).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/string_view.h"
#include "gateway/backends/openai_answer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  constexpr int64_t kPromptTokens = 12;
  auto fast = arbiter::ParseChatAnswer(kPromptTokens, text);
  auto dom = arbiter::ParseChatAnswerDom(kPromptTokens, text);
  if (fast.ok() != dom.ok()) {
    std::fprintf(stderr, "the readers disagree: one-pass %s, DOM %s\n",
                 fast.status().ToString().c_str(),
                 dom.status().ToString().c_str());
    std::abort();
  }
  if (fast.ok() &&
      (fast->text != dom->text || fast->input_tokens != dom->input_tokens ||
       fast->output_tokens != dom->output_tokens ||
       fast->usage_reported != dom->usage_reported ||
       fast->finish_reason != dom->finish_reason ||
       fast->fields_json != dom->fields_json)) {
    std::fprintf(stderr, "the readers read different answers\n");
    std::abort();
  }
  return 0;
}
