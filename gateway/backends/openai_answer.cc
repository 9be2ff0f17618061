#include "gateway/backends/openai_answer.h"

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/json_writer.h"
#include "common/utf8.h"
#include "retrieval/tokenizer.h"

namespace arbiter {

absl::StatusOr<int64_t> TokenCount(const json::View& field, bool* reported) {
  auto count = field.OptionalInt();
  if (!count.ok()) return count.status();
  if (!count->has_value()) return 0;  // Missing or null: counted locally.
  if (**count < 0 || **count > kMaxTokenCount) {
    return absl::InvalidArgumentError(absl::StrCat(
        field.path(), ": must be in [0, ", kMaxTokenCount, "], got ", **count));
  }
  *reported = true;
  return **count;
}

std::string StringIfAny(const json::View& field) {
  auto value = field.OptionalString();
  return value.ok() ? value->value_or("") : "";
}

void PassBack(const json::View& value, absl::string_view key,
              nlohmann::json* fields) {
  if (!value.is_null()) (*fields)[std::string(key)] = *value.get();
}

namespace {

// Reads a unary answer of the common shape in one pass, keeping only what
// ParseResponse takes: choices[0].message.content (a string),
// choices[0].finish_reason and system_fingerprint (strings or null), and
// usage's token counts (integers in range, or null). Anything else it would
// look at (tool calls, logprobs, a wrong type, a duplicate member, an
// error) makes it give up, and the DOM path reads the answer and says
// what is wrong, as before.
class PlainAnswer final {
 public:
  using Json = nlohmann::json;

  // The fields, when the answer has the common shape.
  struct Fields {
    std::string content;
    std::string finish_reason;
    std::string system_fingerprint;
    std::optional<int64_t> prompt_tokens;
    std::optional<int64_t> completion_tokens;
  };

  static std::optional<Fields> Read(absl::string_view text) {
    PlainAnswer reader;
    if (!Json::sax_parse(text.begin(), text.end(), &reader) ||
        reader.given_up_ || !reader.has_content_) {
      return std::nullopt;
    }
    return std::move(reader.fields_);
  }

  // nlohmann's SAX interface.
  bool null() { return Scalar(Kind::kNull, nullptr); }
  bool boolean(bool) { return Scalar(Kind::kOther, nullptr); }
  bool number_integer(Json::number_integer_t value) {
    return value >= 0 ? Count(static_cast<uint64_t>(value))
                      : Scalar(Kind::kOther, nullptr);
  }
  bool number_unsigned(Json::number_unsigned_t value) { return Count(value); }
  bool number_float(Json::number_float_t, const Json::string_t&) {
    return Scalar(Kind::kOther, nullptr);
  }
  bool string(Json::string_t& value) { return Scalar(Kind::kString, &value); }
  bool binary(Json::binary_t&) { return GiveUp(); }
  bool start_object(std::size_t) { return Open(/*object=*/true); }
  bool end_object() { return Close(); }
  bool start_array(std::size_t) { return Open(/*object=*/false); }
  bool end_array() { return Close(); }
  bool key(Json::string_t& name) {
    Frame& top = frames_.back();
    top.field = FieldOf(top.part, name);
    if (top.field == Field::kNone) return true;
    const uint32_t bit = 1u << static_cast<int>(top.field);
    if (top.seen & bit) return GiveUp();  // The DOM keeps the last one.
    top.seen |= bit;
    return true;
  }
  bool parse_error(std::size_t, const std::string&,
                   const nlohmann::detail::exception&) {
    return GiveUp();
  }

 private:
  // The objects and arrays whose members matter; the rest are skipped.
  enum class Part { kRoot, kChoices, kChoice, kMessage, kUsage, kSkipped };
  enum class Field {
    kNone,
    kChoices,
    kUsage,
    kSystemFingerprint,
    kMessage,
    kFinishReason,
    kLogprobs,
    kContent,
    kToolCalls,
    kFunctionCall,
    kPromptTokens,
    kCompletionTokens,
  };
  enum class Kind { kNull, kString, kOther };
  struct Frame {
    Part part;
    Field field = Field::kNone;  // Objects: the member being read.
    uint32_t seen = 0;           // Objects: the fields read so far.
    size_t index = 0;            // Arrays: the element being read.
  };

  static Field FieldOf(Part part, absl::string_view name) {
    switch (part) {
      case Part::kRoot:
        if (name == "choices") return Field::kChoices;
        if (name == "usage") return Field::kUsage;
        if (name == "system_fingerprint") return Field::kSystemFingerprint;
        break;
      case Part::kChoice:
        if (name == "message") return Field::kMessage;
        if (name == "finish_reason") return Field::kFinishReason;
        if (name == "logprobs") return Field::kLogprobs;
        break;
      case Part::kMessage:
        if (name == "content") return Field::kContent;
        if (name == "tool_calls") return Field::kToolCalls;
        if (name == "function_call") return Field::kFunctionCall;
        break;
      case Part::kUsage:
        if (name == "prompt_tokens") return Field::kPromptTokens;
        if (name == "completion_tokens") return Field::kCompletionTokens;
        break;
      default:
        break;
    }
    return Field::kNone;
  }

  bool GiveUp() {
    given_up_ = true;
    return false;
  }

  // Where a value starting now goes: kSkipped when nowhere that matters;
  // nullopt when it is one the DOM path must judge.
  std::optional<Part> Place(bool object, bool array) const {
    if (frames_.empty()) {
      if (object) return Part::kRoot;
      return std::nullopt;
    }
    const Frame& top = frames_.back();
    switch (top.part) {
      case Part::kSkipped:
        return Part::kSkipped;
      case Part::kChoices:
        if (top.index != 0) return Part::kSkipped;
        if (object) return Part::kChoice;
        return std::nullopt;
      default:
        break;
    }
    switch (top.field) {
      case Field::kNone:
        return Part::kSkipped;
      case Field::kChoices:
        if (array) return Part::kChoices;
        return std::nullopt;
      case Field::kMessage:
        if (object) return Part::kMessage;
        return std::nullopt;
      case Field::kUsage:
        if (object) return Part::kUsage;
        return std::nullopt;
      default:
        return std::nullopt;
    }
  }

  bool Open(bool object) {
    // The DOM path refuses this depth before parsing.
    if (frames_.size() >= static_cast<size_t>(json::kMaxDepth)) {
      return GiveUp();
    }
    const std::optional<Part> part = Place(object, !object);
    if (!part.has_value()) return GiveUp();
    if (*part == Part::kChoice) has_choice_ = true;
    if (*part == Part::kMessage) has_message_ = true;
    frames_.push_back({.part = *part});
    return true;
  }

  bool Close() {
    const Part part = frames_.back().part;
    frames_.pop_back();
    if (part == Part::kRoot && !(has_choice_ && has_message_)) return GiveUp();
    Ended();
    return true;
  }

  // A value ended: an array's next element follows.
  void Ended() {
    if (!frames_.empty() && frames_.back().part == Part::kChoices) {
      ++frames_.back().index;
    }
  }

  bool Count(uint64_t value) {
    if (frames_.empty() || frames_.back().part != Part::kUsage ||
        (frames_.back().field != Field::kPromptTokens &&
         frames_.back().field != Field::kCompletionTokens)) {
      return Scalar(Kind::kOther, nullptr);
    }
    if (value > static_cast<uint64_t>(kMaxTokenCount)) return GiveUp();
    (frames_.back().field == Field::kPromptTokens ? fields_.prompt_tokens
                                                  : fields_.completion_tokens) =
        static_cast<int64_t>(value);
    return true;
  }

  bool Scalar(Kind kind, Json::string_t* text) {
    // A scalar where an object or array must be (the root, choices[0],
    // message, choices): the DOM path says so.
    const std::optional<Part> part = Place(false, false);
    if (part == Part::kSkipped) {
      Ended();
      return true;
    }
    if (frames_.empty() || frames_.back().part == Part::kChoices) {
      return GiveUp();
    }
    switch (frames_.back().field) {
      case Field::kContent:
        if (kind != Kind::kString) return GiveUp();
        fields_.content = std::move(*text);
        has_content_ = true;
        return true;
      case Field::kFinishReason:
      case Field::kSystemFingerprint:
        if (kind == Kind::kNull) return true;
        if (kind != Kind::kString) return GiveUp();
        (frames_.back().field == Field::kFinishReason
             ? fields_.finish_reason
             : fields_.system_fingerprint) = std::move(*text);
        return true;
      case Field::kUsage:
      case Field::kLogprobs:
      case Field::kToolCalls:
      case Field::kFunctionCall:
      case Field::kPromptTokens:
      case Field::kCompletionTokens:
        // Null is as good as absent; anything else needs the DOM.
        return kind == Kind::kNull ? true : GiveUp();
      default:
        return GiveUp();
    }
  }

  std::vector<Frame> frames_;
  Fields fields_;
  bool has_choice_ = false;
  bool has_message_ = false;
  bool has_content_ = false;
  bool given_up_ = false;
};

}  // namespace

absl::StatusOr<BackendResponse> ParseChatAnswerDom(int64_t prompt_tokens,
                                                   absl::string_view text) {
  // Strings must be UTF-8 to be parsed and to reach a protobuf.
  auto document = json::ParseRepairingUtf8(text);
  if (!document.ok()) return document.status();
  const json::View root(*document);
  if (absl::Status status = root.RequireObject(); !status.ok()) return status;
  const json::View choices = root["choices"];
  if (absl::Status status = choices.RequireArray(); !status.ok()) {
    return status;
  }
  if (choices.size() == 0) {
    return absl::InvalidArgumentError("choices: empty (expected one choice)");
  }
  const json::View choice = choices[0];
  const json::View message = choice["message"];
  if (absl::Status status = message.RequireObject(); !status.ok()) {
    return status;
  }
  // A message that calls tools may have no content.
  const bool calls =
      !message["tool_calls"].is_null() || !message["function_call"].is_null();
  absl::StatusOr<std::string> content;
  if (calls) {
    auto optional = message["content"].OptionalString();
    if (!optional.ok()) return optional.status();
    content = optional->value_or("");
  } else {
    content = message["content"].String();
  }
  if (!content.ok()) return content.status();

  BackendResponse response;
  response.text = *std::move(content);
  if (!IsValidUtf8(response.text)) response.text = RepairUtf8(response.text);
  response.finish_reason = StringIfAny(choice["finish_reason"]);
  nlohmann::json fields = nlohmann::json::object();
  PassBack(message["tool_calls"], "tool_calls", &fields);
  PassBack(message["function_call"], "function_call", &fields);
  PassBack(choice["logprobs"], "logprobs", &fields);
  if (std::string fingerprint = StringIfAny(root["system_fingerprint"]);
      !fingerprint.empty()) {
    fields["system_fingerprint"] = std::move(fingerprint);
  }
  if (!fields.empty()) response.fields_json = json::Dump(fields);
  bool input_reported = false;
  bool output_reported = false;
  const json::View usage = root["usage"];
  if (!usage.is_null()) {
    if (absl::Status status = usage.RequireObject(); !status.ok()) {
      return status;
    }
    auto input = TokenCount(usage["prompt_tokens"], &input_reported);
    if (!input.ok()) return input.status();
    auto output = TokenCount(usage["completion_tokens"], &output_reported);
    if (!output.ok()) return output.status();
    response.input_tokens = *input;
    response.output_tokens = *output;
  }
  if (!input_reported) response.input_tokens = prompt_tokens;
  if (!output_reported) {
    response.output_tokens = retrieval::CountTokens(response.text);
  }
  response.usage_reported = input_reported && output_reported;
  return response;
}

absl::StatusOr<BackendResponse> ParseChatAnswer(int64_t prompt_tokens,
                                                absl::string_view text) {
  // Most answers are plain text: read without a DOM. Invalid UTF-8 takes
  // the DOM path, which repairs it first.
  if (IsValidUtf8(text)) {
    if (std::optional<PlainAnswer::Fields> plain = PlainAnswer::Read(text)) {
      BackendResponse response;
      response.text = std::move(plain->content);
      response.finish_reason = std::move(plain->finish_reason);
      if (!plain->system_fingerprint.empty()) {
        json::Writer w(&response.fields_json);
        w.BeginObject().Key("system_fingerprint");
        w.String(plain->system_fingerprint).EndObject();
      }
      response.input_tokens = plain->prompt_tokens.value_or(prompt_tokens);
      response.output_tokens = plain->completion_tokens.has_value()
                                   ? *plain->completion_tokens
                                   : retrieval::CountTokens(response.text);
      response.usage_reported = plain->prompt_tokens.has_value() &&
                                plain->completion_tokens.has_value();
      return response;
    }
  }
  return ParseChatAnswerDom(prompt_tokens, text);
}

absl::StatusOr<StreamEvent> ParseStreamEvent(absl::string_view data) {
  StreamEvent event;
  if (data == "[DONE]") {
    event.done = true;
    return event;
  }
  // Text must be UTF-8 to reach a protobuf; a stream is UTF-8 by definition.
  if (std::optional<size_t> bad = FirstInvalidUtf8(data)) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid UTF-8 at byte ", *bad));
  }
  auto document = json::Parse(data);
  if (!document.ok()) return document.status();
  const json::View root(*document);
  if (absl::Status status = root.RequireObject(); !status.ok()) return status;
  if (const json::View error = root["error"]; !error.is_null()) {
    auto code = error["code"].OptionalInt();
    event.error_code = code.ok() && code->has_value() ? **code : int64_t{0};
    return event;
  }
  const json::View choices = root["choices"];
  if (!choices.is_null()) {
    if (absl::Status status = choices.RequireArray(); !status.ok()) {
      return status;
    }
  }
  if (choices.size() > 0) {
    const json::View choice = choices[0];
    const json::View delta = choice["delta"];
    if (!delta.is_null()) {
      if (absl::Status status = delta.RequireObject(); !status.ok()) {
        return status;
      }
    }
    auto content = delta["content"].OptionalString();
    if (!content.ok()) return content.status();
    nlohmann::json fields = nlohmann::json::object();
    if (delta.is_object()) {
      for (const auto& [key, value] : delta.get()->items()) {
        if (key == "role" || key == "content" || value.is_null()) continue;
        fields[key] = value;
      }
    }
    PassBack(choice["logprobs"], "logprobs", &fields);
    event.finish_reason = StringIfAny(choice["finish_reason"]);
    event.text = content->value_or("");
    if (!fields.empty()) event.fields_json = json::Dump(fields);
  }
  event.system_fingerprint = StringIfAny(root["system_fingerprint"]);
  const json::View usage = root["usage"];
  if (!usage.is_null()) {
    if (absl::Status status = usage.RequireObject(); !status.ok()) {
      return status;
    }
    bool reported = false;
    auto input = TokenCount(usage["prompt_tokens"], &reported);
    if (!input.ok()) return input.status();
    if (reported) event.input_tokens = *input;
    reported = false;
    auto output = TokenCount(usage["completion_tokens"], &reported);
    if (!output.ok()) return output.status();
    if (reported) event.output_tokens = *output;
  }
  return event;
}

}  // namespace arbiter
