#include "gateway/openai/endpoints.h"

#include <charconv>
#include <cstring>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/json.h"
#include "common/quote.h"
#include "gateway/openai/chat_request.h"
#include "gateway/openai/errors.h"
#include "gateway/openai/render.h"
#include "gateway/openai/request_body.h"

namespace arbiter::openai {
namespace {

// The double whose shortest decimal form is the float's: JSON then shows
// 0.1 for 0.1f where the float widened to a double would show
// 0.10000000149011612.
double ShortestDouble(float value) {
  char text[32];
  const auto written = std::to_chars(text, text + sizeof(text), value);
  double out = value;
  if (written.ec == std::errc()) std::from_chars(text, written.ptr, out);
  return out;
}

std::string Base64Floats(const std::vector<float>& vector) {
  std::string bytes;
  bytes.reserve(vector.size() * 4);
  for (float value : vector) {
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof(bits));
    for (int shift = 0; shift < 32; shift += 8) {  // Little-endian.
      bytes.push_back(static_cast<char>((bits >> shift) & 0xff));
    }
  }
  return absl::Base64Escape(bytes);
}

absl::StatusOr<std::vector<std::string>> ParseInputs(const json::View& input) {
  std::vector<std::string> inputs;
  auto add = [&](const json::View& at) -> absl::Status {
    auto text = Read(at, &json::View::String);
    if (!text.ok()) return text.status();
    if (text->empty()) return InvalidField(at.path(), "must not be empty");
    inputs.push_back(*std::move(text));
    return absl::OkStatus();
  };
  if (!input.exists()) {
    return InvalidField("input",
                        "missing (expected a string or an array of "
                        "strings)");
  }
  if (input.get()->is_string()) {
    if (auto s = add(input); !s.ok()) return s;
    return inputs;
  }
  if (!input.is_array()) {
    return InvalidField(
        "input", absl::StrCat("expected a string or an array of strings, got ",
                              json::TypeName(*input.get())));
  }
  if (input.size() == 0) return InvalidField("input", "must not be empty");
  const nlohmann::json& first = *input[0].get();
  if (first.is_number() || first.is_array()) {
    return InvalidField("input",
                        "token arrays are not supported: arbiter's embedders "
                        "read text; send a string or an array of strings");
  }
  if (input.size() > kMaxEmbeddingInputs) {
    return InvalidField("input", absl::StrCat("at most ", kMaxEmbeddingInputs,
                                              " inputs, got ", input.size()));
  }
  inputs.reserve(input.size());
  for (size_t i = 0; i < input.size(); ++i) {
    if (auto s = add(input[i]); !s.ok()) return s;
  }
  return inputs;
}

absl::StatusOr<EmbeddingsRequest> ParseEmbeddings(absl::string_view body) {
  auto parsed = ParseRequestBody(body);
  if (!parsed.ok()) return parsed.status();
  const json::View root(*parsed);
  if (auto s = CheckMembers(
          root, {"model", "input", "encoding_format", "dimensions", "user"});
      !s.ok()) {
    return s;
  }
  EmbeddingsRequest request;
  auto model = Read(root["model"], &json::View::String);
  if (!model.ok()) return model.status();
  if (model->empty()) return InvalidField("model", "must not be empty");
  request.model = *std::move(model);
  auto inputs = ParseInputs(root["input"]);
  if (!inputs.ok()) return inputs.status();
  request.inputs = *std::move(inputs);
  auto format = Read(root["encoding_format"], &json::View::OptionalString);
  if (!format.ok()) return format.status();
  if (format->has_value()) {
    if (**format == "base64") {
      request.encoding = EmbeddingEncoding::kBase64;
    } else if (**format != "float") {
      return InvalidField("encoding_format",
                          absl::StrCat("must be \"float\" or \"base64\", got ",
                                       QuoteInput(**format)));
    }
  }
  auto dimensions = Read(root["dimensions"], &json::View::OptionalInt);
  if (!dimensions.ok()) return dimensions.status();
  if (dimensions->has_value() && **dimensions < 1) {
    return InvalidField("dimensions",
                        absl::StrCat("must be >= 1, got ", **dimensions));
  }
  request.dimensions = *dimensions;
  auto user = Read(root["user"], &json::View::OptionalString);
  if (!user.ok()) return user.status();
  request.user = user->value_or("");
  return request;
}

absl::StatusOr<v1::FeedbackRequest> ParseFeedback(absl::string_view body) {
  auto parsed = ParseRequestBody(body);
  if (!parsed.ok()) return parsed.status();
  const json::View root(*parsed);
  if (auto s = CheckMembers(root, {"request_id", "correct", "score"});
      !s.ok()) {
    return s;
  }
  v1::FeedbackRequest request;
  auto id = Read(root["request_id"], &json::View::String);
  if (!id.ok()) return id.status();
  if (id->empty()) return InvalidField("request_id", "must not be empty");
  request.set_request_id(*std::move(id));
  auto correct = Read(root["correct"], &json::View::OptionalBool);
  if (!correct.ok()) return correct.status();
  auto score = Read(root["score"], &json::View::OptionalNumber);
  if (!score.ok()) return score.status();
  if (correct->has_value() && score->has_value()) {
    return InvalidField("score", "send correct or score, not both");
  }
  if (correct->has_value()) {
    request.set_correct(**correct);
  } else if (score->has_value()) {
    if (!(**score >= 0 && **score <= 1)) {
      return InvalidField("score",
                          absl::StrCat("must be in [0, 1], got ", **score));
    }
    request.set_score(**score);
  } else {
    return InvalidField("correct",
                        "missing: send correct (true or false) or score (0 "
                        "to 1)");
  }
  return request;
}

}  // namespace

std::string RenderModelsList(absl::Span<const ModelEntry> routes,
                             int64_t created) {
  auto entry = [created](absl::string_view id, absl::string_view owned_by) {
    Out model = Out::object();
    model["id"] = id;
    model["object"] = "model";
    model["created"] = created;
    model["owned_by"] = owned_by;
    return model;
  };
  Out data = Out::array();
  data.push_back(entry(kAutoModel, "arbiter"));
  for (const ModelEntry& route : routes) {
    if (route.id == kAutoModel) continue;
    data.push_back(entry(route.id, route.owned_by));
  }
  Out list = Out::object();
  list["object"] = "list";
  list["data"] = std::move(data);
  return Dump(list);
}

absl::StatusOr<EmbeddingsRequest> ParseEmbeddingsRequest(
    absl::string_view body) {
  try {
    return ParseEmbeddings(body);
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("reading the embeddings request: ", e.what()));
  }
}

absl::Status CheckDimensions(const EmbeddingsRequest& request, int dimension) {
  if (!request.dimensions.has_value() || *request.dimensions == dimension) {
    return absl::OkStatus();
  }
  return InvalidField(
      "dimensions",
      absl::StrCat("arbiter's embedder makes ", dimension,
                   "-dimensional vectors, not ", *request.dimensions,
                   "; leave dimensions out or send ", dimension));
}

std::string RenderEmbeddings(absl::Span<const std::vector<float>> vectors,
                             absl::string_view model, int64_t prompt_tokens,
                             EmbeddingEncoding encoding) {
  Out data = Out::array();
  for (size_t i = 0; i < vectors.size(); ++i) {
    Out item = Out::object();
    item["object"] = "embedding";
    item["index"] = i;
    if (encoding == EmbeddingEncoding::kBase64) {
      item["embedding"] = Base64Floats(vectors[i]);
    } else {
      Out values = Out::array();
      for (float value : vectors[i]) values.push_back(ShortestDouble(value));
      item["embedding"] = std::move(values);
    }
    data.push_back(std::move(item));
  }
  Out out = Out::object();
  out["object"] = "list";
  out["data"] = std::move(data);
  out["model"] = model;
  out["usage"] =
      Out{{"prompt_tokens", prompt_tokens}, {"total_tokens", prompt_tokens}};
  return Dump(out);
}

absl::StatusOr<v1::FeedbackRequest> ParseFeedbackRequest(
    absl::string_view body) {
  try {
    return ParseFeedback(body);
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("reading the feedback request: ", e.what()));
  }
}

std::string RenderFeedbackResponse(absl::string_view request_id,
                                   const v1::FeedbackResponse& response) {
  Out out = Out::object();
  out["object"] = "feedback";
  out["request_id"] = request_id;
  out["route"] = response.route();
  out["task"] = response.task();
  return Dump(out);
}

}  // namespace arbiter::openai
