#include "gateway/backends/backend.h"

#include "retrieval/tokenizer.h"

namespace arbiter {

int64_t CountPromptTokens(const std::vector<BackendMessage>& messages) {
  constexpr int64_t kFramingPerMessage = 4;  // Role and separators.
  int64_t tokens = 0;
  for (const BackendMessage& message : messages) {
    tokens += retrieval::CountTokens(message.content) + kFramingPerMessage;
  }
  return tokens;
}

}  // namespace arbiter
