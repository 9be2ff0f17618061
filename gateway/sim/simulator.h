#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "arbiter/v1/config.pb.h"

namespace arbiter::sim {

// One labeled question of the quickstart set.
struct LabeledQuestion {
  std::string id;
  std::string task;
  std::string question;
  std::string answer;
};

// Parses JSON Lines with id, task, question and answer on each line.
// INVALID_ARGUMENT naming the line of the first bad one.
[[nodiscard]] absl::StatusOr<std::vector<LabeledQuestion>> ParseQuestionSet(
    absl::string_view jsonl);

struct SimMessage {
  std::string role;
  std::string content;
};

struct SimAnswer {
  std::string text;
  int64_t output_tokens = 0;
  absl::Duration delay;  // Time to first token + per-token time.
  bool correct = false;  // For tests: whether the text holds the answer.
  bool known_question = false;
};

// A piece of a streamed answer: the bytes of the answer's text up to `end`
// (from where the previous chunk ended), `tokens` of them, sent `at` after
// the request arrived.
struct SimChunk {
  size_t end = 0;
  int64_t tokens = 0;
  absl::Duration at;
};

// Chunks closer together than this are sent as one, so a fast simulated
// model (seconds_per_token of a few milliseconds) costs the timer thread
// at most 100 wake-ups per second per stream.
inline constexpr absl::Duration kMinChunkInterval = absl::Milliseconds(10);

// A simulated LLM, honest about being one: every answer starts with "[sim]".
// It knows a labeled question set. Asked one of its questions, it answers
// correctly when the gold answer is in the prompt's other messages (retrieved
// context), else with the model's per-task accuracy; a wrong answer names the
// answer to another question of the same task. The same seed, model and
// question give the same answer; a request's own seed, when it has one,
// takes part in the choice too (same seed, same answer). A streamed answer
// comes word by word (NextChunk): the first after time_to_first_token, each
// next one seconds_per_token per token later; joined, the chunks are the
// unary answer's text. Thread-safe: constant after Create.
class Simulator final {
 public:
  static absl::StatusOr<std::unique_ptr<Simulator>> Create(
      const v1::SimBackend& config, std::vector<LabeledQuestion> questions);

  Simulator(const Simulator&) = delete;
  Simulator& operator=(const Simulator&) = delete;

  // The question is the content of the last user message. max_tokens <= 0
  // means the configured output length.
  [[nodiscard]] SimAnswer Answer(
      absl::string_view model, const std::vector<SimMessage>& messages,
      int max_tokens, std::optional<int64_t> seed = std::nullopt) const;

  // The chunk of `text` (an answer's) that starts at byte `from`, after
  // `tokens_before` tokens: one word with the space before it, or several
  // when each takes less than kMinChunkInterval. Call while from <
  // text.size().
  //
  //   size_t from = 0; int64_t tokens = 0;
  //   while (from < text.size()) {
  //     SimChunk chunk = sim.NextChunk(text, from, tokens);
  //     Send(text.substr(from, chunk.end - from), start + chunk.at);
  //     from = chunk.end; tokens += chunk.tokens;
  //   }  // The answer ends at start + answer.delay.
  [[nodiscard]] SimChunk NextChunk(absl::string_view text, size_t from,
                                   int64_t tokens_before) const;

  [[nodiscard]] size_t question_count() const { return questions_.size(); }
  [[nodiscard]] const v1::SimBackend& config() const { return config_; }

 private:
  explicit Simulator(const v1::SimBackend& config) : config_(config) {}
  double Accuracy(absl::string_view model, const std::string& task) const;

  const v1::SimBackend config_;
  std::vector<LabeledQuestion> questions_;
  // Normalised question text -> index into questions_.
  absl::flat_hash_map<std::string, size_t> by_question_;
  // Task -> indices of its questions, for plausible wrong answers.
  absl::flat_hash_map<std::string, std::vector<size_t>> by_task_;
};

}  // namespace arbiter::sim
