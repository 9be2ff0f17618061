#pragma once

#include <memory>
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

// A simulated LLM, honest about being one: every answer starts with "[sim]".
// It knows a labeled question set. Asked one of its questions, it answers
// correctly when the gold answer is in the prompt's other messages (retrieved
// context), else with the model's per-task accuracy; a wrong answer names the
// answer to another question of the same task. The same seed, model and
// question give the same answer. Thread-safe: constant after Create.
class Simulator final {
 public:
  static absl::StatusOr<std::unique_ptr<Simulator>> Create(
      const v1::SimBackend& config, std::vector<LabeledQuestion> questions);

  Simulator(const Simulator&) = delete;
  Simulator& operator=(const Simulator&) = delete;

  // The question is the content of the last user message. max_tokens <= 0
  // means the configured output length.
  [[nodiscard]] SimAnswer Answer(absl::string_view model,
                                 const std::vector<SimMessage>& messages,
                                 int max_tokens) const;

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
