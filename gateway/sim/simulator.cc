#include "gateway/sim/simulator.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/json.h"
#include "policy/hash.h"
#include "retrieval/tokenizer.h"

namespace arbiter::sim {
namespace {

// Words joined by single spaces, so case and punctuation do not matter.
std::string Normalize(absl::string_view text) {
  std::vector<std::string> words = retrieval::Words(text);
  return absl::StrJoin(words, " ");
}

// Words used to pad an answer to the configured output length.
constexpr absl::string_view kFiller[] = {
    "This", "answer",    "was",        "generated", "by",
    "the",  "arbiter",   "simulator",  "to",        "model",
    "a",    "realistic", "completion", "length."};

}  // namespace

absl::StatusOr<std::vector<LabeledQuestion>> ParseQuestionSet(
    absl::string_view jsonl) {
  std::vector<LabeledQuestion> questions;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(jsonl, '\n')) {
    ++line_number;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    auto item = json::Parse(line);
    if (!item.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_number, ": ", item.status().message()));
    }
    if (!item->is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat("line ", line_number, ": not a JSON object"));
    }
    const json::View fields(*item);
    LabeledQuestion question;
    for (auto [key, field] :
         {std::pair{"id", &question.id}, std::pair{"task", &question.task},
          std::pair{"question", &question.question},
          std::pair{"answer", &question.answer}}) {
      auto value = fields[key].String();
      if (!value.ok() || value->empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("line ", line_number, ": \"", key,
                         "\" must be a non-empty string"));
      }
      *field = *std::move(value);
    }
    questions.push_back(std::move(question));
  }
  return questions;
}

absl::StatusOr<std::unique_ptr<Simulator>> Simulator::Create(
    const v1::SimBackend& config, std::vector<LabeledQuestion> questions) {
  auto simulator = std::unique_ptr<Simulator>(new Simulator(config));
  for (size_t i = 0; i < questions.size(); ++i) {
    std::string key = Normalize(questions[i].question);
    if (!simulator->by_question_.emplace(key, i).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "question set: \"", questions[i].question, "\" appears twice"));
    }
    simulator->by_task_[questions[i].task].push_back(i);
  }
  simulator->questions_ = std::move(questions);
  return simulator;
}

double Simulator::Accuracy(absl::string_view model,
                           const std::string& task) const {
  for (const v1::SimModel& m : config_.models()) {
    if (m.name() != model) continue;
    auto it = m.task_accuracy().find(task);
    return it != m.task_accuracy().end() ? it->second : m.accuracy();
  }
  return 0.5;
}

SimAnswer Simulator::Answer(absl::string_view model,
                            const std::vector<SimMessage>& messages,
                            int max_tokens, std::optional<int64_t> seed) const {
  SimAnswer answer;
  const SimMessage* question = nullptr;
  for (auto it = messages.rbegin(); it != messages.rend(); ++it) {
    if (it->role == "user") {
      question = &*it;
      break;
    }
  }
  std::string text;
  auto found = question ? by_question_.find(Normalize(question->content))
                        : by_question_.end();
  if (found == by_question_.end()) {
    text = "[sim] I am a simulated model and do not know this question.";
  } else {
    answer.known_question = true;
    const LabeledQuestion& item = questions_[found->second];
    bool in_context = false;
    for (const SimMessage& message : messages) {
      if (&message != question &&
          message.content.find(item.answer) != std::string::npos) {
        in_context = true;
        break;
      }
    }
    std::string key = absl::StrCat(model, "\x1f", item.id);
    if (seed.has_value()) absl::StrAppend(&key, "\x1fseed ", *seed);
    uint64_t draw = policy::StableHash64(key, config_.seed());
    bool correct =
        in_context || policy::UnitInterval(draw) < Accuracy(model, item.task);
    if (correct) {
      text = absl::StrCat("[sim] The answer is: ", item.answer, ".");
    } else {
      // A plausible wrong answer: another question's answer, same task.
      const std::vector<size_t>& peers = by_task_.at(item.task);
      const LabeledQuestion* other = nullptr;
      if (peers.size() > 1) {
        size_t pick = (draw >> 8) % (peers.size() - 1);
        if (peers[pick] == found->second) pick = peers.size() - 1;
        other = &questions_[peers[pick]];
      }
      text = other ? absl::StrCat("[sim] The answer is: ", other->answer, ".")
                   : std::string("[sim] I am not sure.");
    }
    answer.correct = correct;
  }
  int64_t target = max_tokens > 0
                       ? std::min<int64_t>(max_tokens, config_.output_tokens())
                       : config_.output_tokens();
  if (target <= 0) target = retrieval::CountTokens(text);
  int64_t tokens = retrieval::CountTokens(text);
  for (size_t i = 0; tokens < target; ++i) {
    absl::string_view word = kFiller[i % std::size(kFiller)];
    absl::StrAppend(&text, " ", word);
    tokens += retrieval::CountTokens(word);
  }
  if (max_tokens > 0 && tokens > max_tokens) {
    // A limit below the answer's own length cuts the answer short.
    std::vector<absl::string_view> words = absl::StrSplit(text, ' ');
    std::string cut;
    tokens = 0;
    for (absl::string_view word : words) {
      int64_t cost = retrieval::CountTokens(word);
      if (tokens + cost > max_tokens) break;
      absl::StrAppend(&cut, cut.empty() ? "" : " ", word);
      tokens += cost;
    }
    text = std::move(cut);
    if (answer.known_question) {
      answer.correct =
          answer.correct &&
          text.find(questions_[found->second].answer) != std::string::npos;
    }
  }
  answer.text = std::move(text);
  answer.output_tokens = tokens;
  answer.delay = absl::Seconds(config_.time_to_first_token_seconds() +
                               config_.seconds_per_token() * tokens);
  return answer;
}

SimChunk Simulator::NextChunk(absl::string_view text, size_t from,
                              int64_t tokens_before) const {
  const absl::Duration per_token = absl::Seconds(config_.seconds_per_token());
  SimChunk chunk;
  chunk.end = from;
  chunk.at = absl::Seconds(config_.time_to_first_token_seconds()) +
             per_token * tokens_before;
  do {
    // One word and the spaces before it: splitting before a space splits
    // no word, so the chunks' tokens add up to the text's.
    size_t end = text.find_first_not_of(' ', chunk.end);
    end = end == absl::string_view::npos ? text.size() : text.find(' ', end);
    if (end == absl::string_view::npos) end = text.size();
    chunk.tokens +=
        retrieval::CountTokens(text.substr(chunk.end, end - chunk.end));
    chunk.end = end;
  } while (chunk.end < text.size() &&
           per_token * chunk.tokens < kMinChunkInterval);
  return chunk;
}

}  // namespace arbiter::sim
