#include "gateway/openai/chat_request.h"

#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <optional>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/json.h"
#include "common/quote.h"
#include "common/utf8.h"
#include "gateway/openai/errors.h"
#include "gateway/openai/request_body.h"

namespace arbiter::openai {
namespace {

using Json = nlohmann::json;

constexpr absl::string_view kFields[] = {
    "model",       "messages", "max_tokens",     "max_completion_tokens",
    "temperature", "top_p",    "stop",           "seed",
    "user",        "stream",   "stream_options", "metadata",
    "n",           "arbiter"};

// OpenAI fields arbiter can neither honour nor hand to a backend.
constexpr absl::string_view kUnsupported[] = {
    "audio", "modalities",         "prediction",
    "store", "web_search_options", "verbosity"};

constexpr int kMaxStop = 4;
constexpr int kMaxMetadataKeys = 16;
constexpr size_t kMaxMetadataKeyBytes = 64;
constexpr size_t kMaxMetadataValueBytes = 512;

bool Contains(absl::Span<const absl::string_view> names,
              absl::string_view name) {
  for (absl::string_view n : names) {
    if (n == name) return true;
  }
  return false;
}

// What arbiter's own inputs say, from the headers or the body's `arbiter`.
struct ArbiterInputs {
  std::optional<std::string> task;
  std::optional<std::string> unit_id;
  std::optional<std::string> route;
  std::optional<double> max_cost_usd;
  std::optional<double> min_accuracy;
  std::optional<bool> allow_fallback;
  std::optional<double> timeout_ms;
};

absl::Status CheckTimeout(double value, absl::string_view param) {
  if (!(value > 0 && value <= 86'400'000)) {
    return InvalidField(
        param,
        absl::StrCat("must be in (0, 86400000] milliseconds, got ", value));
  }
  return absl::OkStatus();
}

absl::Status CheckMaxCost(double value, absl::string_view param) {
  if (!(value >= 0)) {
    return InvalidField(param, absl::StrCat("must be >= 0, got ", value));
  }
  return absl::OkStatus();
}

absl::Status CheckMinAccuracy(double value, absl::string_view param) {
  if (!(value >= 0 && value <= 1)) {
    return InvalidField(param, absl::StrCat("must be in [0, 1], got ", value));
  }
  return absl::OkStatus();
}

absl::StatusOr<ArbiterInputs> FromHeaders(HeaderFields headers) {
  ArbiterInputs inputs;
  constexpr absl::string_view kKnown[] = {
      kTaskHeader,        kUnitIdHeader,        kMaxCostHeader,
      kMinAccuracyHeader, kAllowFallbackHeader, kTimeoutHeader};
  constexpr int kCount = std::size(kKnown);
  bool seen[kCount] = {};
  for (const auto& [name, raw_value] : headers) {
    if (!absl::StartsWithIgnoreCase(name, "x-arbiter-")) continue;
    const std::string lower = absl::AsciiStrToLower(ShownName(name));
    int which = -1;
    for (int i = 0; i < kCount; ++i) {
      if (lower == kKnown[i]) which = i;
    }
    if (which < 0) {
      return InvalidField(lower, absl::StrCat("unknown header; arbiter reads ",
                                              absl::StrJoin(kKnown, ", ")));
    }
    if (seen[which]) return InvalidField(lower, "sent more than once");
    seen[which] = true;
    const absl::string_view value = absl::StripAsciiWhitespace(raw_value);
    if (std::optional<size_t> bad = FirstInvalidUtf8(value)) {
      return InvalidField(lower, absl::StrCat("invalid UTF-8 at byte ", *bad));
    }
    if (value.empty()) continue;
    if (which == 0) {
      inputs.task = std::string(value);
    } else if (which == 1) {
      inputs.unit_id = std::string(value);
    } else if (which == 4) {
      if (value != "true" && value != "false") {
        return InvalidField(lower, absl::StrCat("expected true or false, got ",
                                                QuoteInput(value)));
      }
      inputs.allow_fallback = value == "true";
    } else {
      double number = 0;
      if (!absl::SimpleAtod(value, &number) || !std::isfinite(number)) {
        return InvalidField(
            lower, absl::StrCat("expected a number, got ", QuoteInput(value)));
      }
      if (which == 2) {
        if (absl::Status s = CheckMaxCost(number, lower); !s.ok()) return s;
        inputs.max_cost_usd = number;
      } else if (which == 5) {
        if (absl::Status s = CheckTimeout(number, lower); !s.ok()) return s;
        inputs.timeout_ms = number;
      } else {
        if (absl::Status s = CheckMinAccuracy(number, lower); !s.ok()) {
          return s;
        }
        inputs.min_accuracy = number;
      }
    }
  }
  return inputs;
}

absl::StatusOr<ArbiterInputs> FromBody(const json::View& arbiter) {
  ArbiterInputs inputs;
  if (arbiter.is_null()) return inputs;
  if (auto s = Param(arbiter.RequireObject(), arbiter); !s.ok()) return s;
  if (auto s = CheckMembers(
          arbiter, {"task", "unit_id", "route", "max_cost_usd", "min_accuracy",
                    "allow_fallback", "timeout_ms"});
      !s.ok()) {
    return s;
  }
  for (auto [field, target] :
       {std::pair{"task", &inputs.task}, std::pair{"unit_id", &inputs.unit_id},
        std::pair{"route", &inputs.route}}) {
    auto value = Read(arbiter[field], &json::View::OptionalString);
    if (!value.ok()) return value.status();
    if (value->has_value() && !(*value)->empty()) *target = std::move(*value);
  }
  auto max_cost = Read(arbiter["max_cost_usd"], &json::View::OptionalNumber);
  if (!max_cost.ok()) return max_cost.status();
  if (max_cost->has_value()) {
    if (auto s = CheckMaxCost(**max_cost, "arbiter.max_cost_usd"); !s.ok()) {
      return s;
    }
    inputs.max_cost_usd = *max_cost;
  }
  auto min_accuracy =
      Read(arbiter["min_accuracy"], &json::View::OptionalNumber);
  if (!min_accuracy.ok()) return min_accuracy.status();
  if (min_accuracy->has_value()) {
    if (auto s = CheckMinAccuracy(**min_accuracy, "arbiter.min_accuracy");
        !s.ok()) {
      return s;
    }
    inputs.min_accuracy = *min_accuracy;
  }
  auto allow_fallback =
      Read(arbiter["allow_fallback"], &json::View::OptionalBool);
  if (!allow_fallback.ok()) return allow_fallback.status();
  inputs.allow_fallback = *allow_fallback;
  auto timeout = Read(arbiter["timeout_ms"], &json::View::OptionalNumber);
  if (!timeout.ok()) return timeout.status();
  if (timeout->has_value()) {
    if (auto s = CheckTimeout(**timeout, "arbiter.timeout_ms"); !s.ok()) {
      return s;
    }
    inputs.timeout_ms = *timeout;
  }
  return inputs;
}

absl::StatusOr<std::string> ParseContent(const json::View& content) {
  if (content.get() != nullptr && content.get()->is_string()) {
    return content.get()->get_ref<const std::string&>();
  }
  if (!content.is_array()) {
    return InvalidField(
        content.path(),
        absl::StrCat(
            "expected a string or an array of text parts, got ",
            content.exists() ? json::TypeName(*content.get()) : "nothing"));
  }
  std::vector<std::string> texts;
  for (size_t i = 0; i < content.size(); ++i) {
    const json::View part = content[i];
    if (auto s = Param(part.RequireObject(), part); !s.ok()) return s;
    auto type = Read(part["type"], &json::View::String);
    if (!type.ok()) return type.status();
    if (*type == "image_url" || *type == "input_audio" || *type == "file" ||
        *type == "refusal") {
      return InvalidField(
          part["type"].path(),
          absl::StrCat(QuoteInput(*type),
                       " parts are not supported: arbiter sends text only"));
    }
    if (*type != "text") {
      return InvalidField(
          part["type"].path(),
          absl::StrCat("must be \"text\", got ", QuoteInput(*type)));
    }
    if (auto s = CheckMembers(part, {"type", "text"}); !s.ok()) return s;
    auto text = Read(part["text"], &json::View::String);
    if (!text.ok()) return text.status();
    texts.push_back(*std::move(text));
  }
  return absl::StrJoin(texts, "\n");
}

absl::Status ParseMessage(const json::View& message, v1::ChatMessage* out) {
  if (auto s = Param(message.RequireObject(), message); !s.ok()) return s;
  auto role = Read(message["role"], &json::View::String);
  if (!role.ok()) return role.status();
  if (*role == "system" || *role == "developer") {
    out->set_role(v1::ROLE_SYSTEM);
  } else if (*role == "user") {
    out->set_role(v1::ROLE_USER);
  } else if (*role == "assistant") {
    out->set_role(v1::ROLE_ASSISTANT);
  } else if (*role == "tool") {
    out->set_role(v1::ROLE_TOOL);
  } else if (*role == "function") {
    return InvalidField(message["role"].path(),
                        "\"function\" messages (deprecated by OpenAI) are "
                        "not supported: send \"tool\" messages");
  } else {
    return InvalidField(
        message["role"].path(),
        absl::StrCat("must be system, developer, user, assistant or tool, got ",
                     QuoteInput(*role)));
  }
  // Fields of OpenAI's messages that arbiter's cannot carry; null is absent.
  // Looked up before a View is made: a View builds its path string.
  for (absl::string_view field : {"function_call", "refusal", "audio"}) {
    const auto found = message.get()->find(field);
    if (found != message.get()->end() && !found->is_null()) {
      return InvalidField(message[field].path(),
                          "not supported: arbiter passes text, tool calls "
                          "and tool results only");
    }
  }
  if (auto s = CheckMembers(
          message, {"role", "content", "name", "tool_calls", "tool_call_id",
                    "function_call", "refusal", "audio"});
      !s.ok()) {
    return s;
  }
  auto name = Read(message["name"], &json::View::OptionalString);
  if (!name.ok()) return name.status();
  if (name->has_value()) out->set_name(**name);
  auto call_id = Read(message["tool_call_id"], &json::View::OptionalString);
  if (!call_id.ok()) return call_id.status();
  if (out->role() == v1::ROLE_TOOL) {
    if (!call_id->has_value() || (*call_id)->empty()) {
      return InvalidField(message["tool_call_id"].path(),
                          "required in a tool message: the id of the call it "
                          "answers");
    }
    out->set_tool_call_id(**call_id);
  } else if (call_id->has_value()) {
    return InvalidField(message["tool_call_id"].path(),
                        "only a tool message has one");
  }
  const json::View calls = message["tool_calls"];
  const bool has_calls = !calls.is_null();
  if (has_calls) {
    if (out->role() != v1::ROLE_ASSISTANT) {
      return InvalidField(calls.path(), "only an assistant message has them");
    }
    if (!calls.is_array()) {
      return InvalidField(calls.path(),
                          absl::StrCat("expected an array, got ",
                                       json::TypeName(*calls.get())));
    }
    for (size_t i = 0; i < calls.size(); ++i) {
      if (auto s = Param(calls[i].RequireObject(), calls[i]); !s.ok()) {
        return s;
      }
    }
    out->set_tool_calls_json(json::Dump(*calls.get()));
  }
  // An assistant turn that only calls tools has no content.
  if (has_calls && message["content"].is_null()) return absl::OkStatus();
  auto content = ParseContent(message["content"]);
  if (!content.ok()) return content.status();
  out->set_content(*std::move(content));
  return absl::OkStatus();
}

absl::Status ParseMessages(const json::View& messages, v1::InferRequest* out) {
  if (auto s = Param(messages.RequireArray(), messages); !s.ok()) return s;
  if (messages.size() == 0) {
    return InvalidField("messages", "must not be empty");
  }
  for (size_t i = 0; i < messages.size(); ++i) {
    if (auto s = ParseMessage(messages[i], out->add_messages()); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<int32_t>> ParseTokenLimit(const json::View& at) {
  auto value = Read(at, &json::View::OptionalInt);
  if (!value.ok()) return value.status();
  if (!value->has_value()) return std::optional<int32_t>();
  if (**value < 1) {
    return InvalidField(at.path(), absl::StrCat("must be >= 1, got ", **value));
  }
  if (**value > std::numeric_limits<int32_t>::max()) {
    return InvalidField(
        at.path(),
        absl::StrCat("must be at most ", std::numeric_limits<int32_t>::max(),
                     ", got ", **value));
  }
  return std::optional<int32_t>(static_cast<int32_t>(**value));
}

absl::Status ParseLimits(const json::View& root, v1::GenerationLimits* out) {
  auto max_tokens = ParseTokenLimit(root["max_tokens"]);
  if (!max_tokens.ok()) return max_tokens.status();
  auto max_completion = ParseTokenLimit(root["max_completion_tokens"]);
  if (!max_completion.ok()) return max_completion.status();
  if (max_tokens->has_value() && max_completion->has_value() &&
      **max_tokens != **max_completion) {
    return InvalidField(
        "max_tokens",
        absl::StrCat("conflicts with max_completion_tokens (", **max_tokens,
                     " vs ", **max_completion, "); send one of them"));
  }
  if (max_completion->has_value()) {
    out->set_max_output_tokens(**max_completion);
  } else if (max_tokens->has_value()) {
    out->set_max_output_tokens(**max_tokens);
  }

  auto temperature = Read(root["temperature"], &json::View::OptionalNumber);
  if (!temperature.ok()) return temperature.status();
  if (temperature->has_value()) {
    if (!(**temperature >= 0 && **temperature <= 2)) {
      return InvalidField("temperature", absl::StrCat("must be in [0, 2], got ",
                                                      **temperature));
    }
    out->set_temperature(**temperature);
  }
  auto top_p = Read(root["top_p"], &json::View::OptionalNumber);
  if (!top_p.ok()) return top_p.status();
  if (top_p->has_value()) {
    if (!(**top_p > 0 && **top_p <= 1)) {
      return InvalidField("top_p",
                          absl::StrCat("must be in (0, 1], got ", **top_p));
    }
    out->set_top_p(**top_p);
  }
  auto seed = Read(root["seed"], &json::View::OptionalInt);
  if (!seed.ok()) return seed.status();
  if (seed->has_value()) out->set_seed(**seed);

  const json::View stop = root["stop"];
  if (stop.is_null()) return absl::OkStatus();
  auto add_stop = [&](const json::View& at) -> absl::Status {
    auto text = Read(at, &json::View::String);
    if (!text.ok()) return text.status();
    if (text->empty()) return InvalidField(at.path(), "must not be empty");
    out->add_stop(*std::move(text));
    return absl::OkStatus();
  };
  if (stop.get()->is_string()) return add_stop(stop);
  if (!stop.is_array()) {
    return InvalidField(
        "stop", absl::StrCat("expected a string or an array of strings, got ",
                             json::TypeName(*stop.get())));
  }
  if (stop.size() > static_cast<size_t>(kMaxStop)) {
    return InvalidField("stop", absl::StrCat("at most ", kMaxStop,
                                             " sequences, got ", stop.size()));
  }
  for (size_t i = 0; i < stop.size(); ++i) {
    if (auto s = add_stop(stop[i]); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status ParseMetadata(const json::View& metadata, v1::InferRequest* out) {
  if (metadata.is_null()) return absl::OkStatus();
  if (auto s = Param(metadata.RequireObject(), metadata); !s.ok()) return s;
  if (metadata.size() > static_cast<size_t>(kMaxMetadataKeys)) {
    return InvalidField(
        "metadata", absl::StrCat("at most ", kMaxMetadataKeys, " keys, got ",
                                 metadata.size()));
  }
  for (const auto& [key, value] : metadata.get()->items()) {
    if (key.size() > kMaxMetadataKeyBytes) {
      return InvalidField("metadata",
                          absl::StrCat("key ", QuoteInput(key), " is over ",
                                       kMaxMetadataKeyBytes, " bytes"));
    }
    const json::View at = metadata[key];
    auto text = Read(at, &json::View::String);
    if (!text.ok()) return text.status();
    if (text->size() > kMaxMetadataValueBytes) {
      return InvalidField(at.path(),
                          absl::StrCat("is over ", kMaxMetadataValueBytes,
                                       " bytes (", text->size(), ")"));
    }
    (*out->mutable_metadata())[key] = *std::move(text);
  }
  return absl::OkStatus();
}

// The JSON type a pass-through field must have (the backend judges the
// rest): catches the mistakes a client makes before a backend's vaguer
// answer would.
absl::Status CheckPassThrough(const std::string& name, const Json& value) {
  auto expect = [&](bool ok, absl::string_view what) -> absl::Status {
    if (ok) return absl::OkStatus();
    return InvalidField(
        name, absl::StrCat("expected ", what, ", got ", json::TypeName(value)));
  };
  auto in_range = [&](double low, double high) -> absl::Status {
    if (!value.is_number()) return expect(false, "a number");
    const double number = value.get<double>();
    if (number >= low && number <= high) return absl::OkStatus();
    return InvalidField(name, absl::StrFormat("must be in [%g, %g], got %g",
                                              low, high, number));
  };
  if (name == "tools" || name == "functions") {
    return expect(value.is_array(), "an array");
  }
  if (name == "tool_choice" || name == "function_call") {
    return expect(value.is_string() || value.is_object(),
                  "a string or an object");
  }
  if (name == "response_format" || name == "logit_bias") {
    return expect(value.is_object(), "an object");
  }
  if (name == "parallel_tool_calls" || name == "logprobs") {
    return expect(value.is_boolean(), "a boolean");
  }
  if (name == "service_tier" || name == "reasoning_effort") {
    return expect(value.is_string(), "a string");
  }
  if (name == "top_logprobs") {
    if (!value.is_number_integer()) return expect(false, "an integer");
    return in_range(0, 20);
  }
  if (name == "presence_penalty" || name == "frequency_penalty") {
    return in_range(-2, 2);
  }
  if (name == "top_k") {
    return expect(value.is_number_integer(), "an integer");
  }
  return expect(value.is_number(), "a number");  // min_p, repetition_penalty.
}

absl::StatusOr<ChatCompletion> Parse(absl::string_view body,
                                     HeaderFields headers) {
  auto parsed = ParseRequestBody(body);
  if (!parsed.ok()) return parsed.status();
  const Json& document = *parsed;
  const json::View root(document);

  Json passthrough;  // Null until a field is passed: no object to allocate.
  for (const auto& [name, value] : document.items()) {
    if (Contains(kFields, name)) continue;
    if (Contains(kPassThrough, name)) {
      if (value.is_null()) continue;
      if (auto s = CheckPassThrough(name, value); !s.ok()) return s;
      passthrough[name] = value;
      continue;
    }
    if (Contains(kUnsupported, name)) {
      return InvalidField(name, "not supported by arbiter");
    }
    return InvalidField(ShownName(name),
                        "unknown field (the README lists the fields arbiter "
                        "reads and passes through)");
  }

  ChatCompletion chat;
  v1::InferRequest& request = chat.request;
  auto model = Read(root["model"], &json::View::String);
  if (!model.ok()) return model.status();
  if (model->empty()) return InvalidField("model", "must not be empty");
  chat.model = *std::move(model);

  if (auto s = ParseMessages(root["messages"], &request); !s.ok()) return s;

  auto n = Read(root["n"], &json::View::OptionalInt);
  if (!n.ok()) return n.status();
  if (n->has_value() && **n > 1) {
    return InvalidField("n",
                        "arbiter returns one choice; send n: 1 or leave "
                        "it out");
  }
  if (n->has_value() && **n < 1) {
    return InvalidField("n", absl::StrCat("must be 1, got ", **n));
  }

  if (auto s = ParseLimits(root, request.mutable_limits()); !s.ok()) return s;

  auto stream = Read(root["stream"], &json::View::OptionalBool);
  if (!stream.ok()) return stream.status();
  chat.stream = stream->value_or(false);
  const json::View stream_options = root["stream_options"];
  if (!stream_options.is_null()) {
    if (auto s = Param(stream_options.RequireObject(), stream_options);
        !s.ok()) {
      return s;
    }
    if (auto s = CheckMembers(stream_options, {"include_usage"}); !s.ok()) {
      return s;
    }
    auto include_usage =
        Read(stream_options["include_usage"], &json::View::OptionalBool);
    if (!include_usage.ok()) return include_usage.status();
    if (!chat.stream) {
      return InvalidField("stream_options", "only allowed when stream is true");
    }
    chat.include_usage = include_usage->value_or(false);
  }

  if (auto s = ParseMetadata(root["metadata"], &request); !s.ok()) return s;

  auto user = Read(root["user"], &json::View::OptionalString);
  if (!user.ok()) return user.status();
  auto from_headers = FromHeaders(headers);
  if (!from_headers.ok()) return from_headers.status();
  auto from_body = FromBody(root["arbiter"]);
  if (!from_body.ok()) return from_body.status();
  // The body is this request's say, headers a client's defaults.
  auto pick = [](auto& body_value, auto& header_value) {
    return body_value.has_value() ? body_value : header_value;
  };
  if (auto task = pick(from_body->task, from_headers->task)) {
    request.set_task(*task);
  }
  if (auto unit = pick(from_body->unit_id, from_headers->unit_id)) {
    request.set_unit_id(*unit);
  } else if (user->has_value()) {
    request.set_unit_id(**user);
  }
  if (auto cost = pick(from_body->max_cost_usd, from_headers->max_cost_usd)) {
    request.mutable_constraints()->set_max_cost_usd(*cost);
  }
  if (auto accuracy =
          pick(from_body->min_accuracy, from_headers->min_accuracy)) {
    request.mutable_constraints()->set_min_accuracy(*accuracy);
  }

  if (auto allow =
          pick(from_body->allow_fallback, from_headers->allow_fallback)) {
    request.set_allow_fallback(*allow);
  }
  if (auto timeout = pick(from_body->timeout_ms, from_headers->timeout_ms)) {
    chat.timeout = absl::Milliseconds(*timeout);
  }

  chat.auto_route = chat.model == kAutoModel;
  if (chat.auto_route) {
    if (from_body->route.has_value()) {
      request.set_route(*from_body->route);
      chat.route_param = "arbiter.route";
    }
  } else {
    if (from_body->route.has_value() && *from_body->route != chat.model) {
      return InvalidField(
          "arbiter.route",
          absl::StrCat("conflicts with model ", QuoteInput(chat.model),
                       "; pin a route with one of them, or send model \"",
                       kAutoModel, "\""));
    }
    request.set_route(chat.model);
    chat.route_param = "model";
  }

  if (!passthrough.empty()) {
    request.set_passthrough_json(json::Dump(passthrough));
  }
  return chat;
}

}  // namespace

absl::StatusOr<ChatCompletion> ParseChatCompletionRequest(
    absl::string_view body, HeaderFields headers) {
  // Nothing here should throw; a bug must fail one request, not the front.
  try {
    return Parse(body, headers);
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("reading the chat completion request: ", e.what()));
  }
}

absl::Status UnknownModel(const ChatCompletion& chat,
                          absl::Span<const std::string> routes) {
  constexpr size_t kMaxListed = 20;
  std::vector<absl::string_view> listed;
  for (size_t i = 0; i < routes.size() && i < kMaxListed; ++i) {
    listed.push_back(routes[i]);
  }
  std::string known = absl::StrJoin(listed, ", ");
  if (routes.size() > kMaxListed) {
    absl::StrAppend(&known, ", ... (", routes.size(), " routes)");
  }
  if (chat.route_param == "arbiter.route") {
    return WithParam(
        absl::NotFoundError(absl::StrCat(
            "arbiter.route: unknown route ", QuoteInput(chat.request.route()),
            " (routes: ", known.empty() ? "none" : known, ")")),
        "arbiter.route");
  }
  return WithParam(
      absl::NotFoundError(absl::StrCat(
          "model: unknown model ", QuoteInput(chat.model),
          " (served: ", kAutoModel, known.empty() ? "" : ", ", known, ")")),
      "model");
}

}  // namespace arbiter::openai
