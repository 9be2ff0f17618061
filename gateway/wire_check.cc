#include "gateway/wire_check.h"

#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "common/quote.h"
#include "common/utf8.h"
#include "google/protobuf/unknown_field_set.h"

namespace arbiter {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::UnknownField;
using google::protobuf::UnknownFieldSet;

// Deeper nesting is not walked (our messages nest a few levels).
constexpr int kMaxDepth = 16;

// " (id \"doc-7\")" when the message has a string field `id` (a document,
// say), to say which one; else "".
std::string IdOf(const Descriptor& descriptor, const UnknownFieldSet& fields) {
  const FieldDescriptor* id = descriptor.FindFieldByName("id");
  if (id == nullptr || id->type() != FieldDescriptor::TYPE_STRING) return "";
  for (int i = 0; i < fields.field_count(); ++i) {
    const UnknownField& field = fields.field(i);
    if (field.number() == id->number() &&
        field.type() == UnknownField::TYPE_LENGTH_DELIMITED) {
      return absl::StrCat(" (id ", QuoteInput(field.length_delimited()), ")");
    }
  }
  return "";
}

// "path: invalid UTF-8 at byte N" for the first string field of `fields`
// (read as a `descriptor` message) that is not UTF-8; nullopt if none is.
std::optional<std::string> FirstInvalidString(const Descriptor& descriptor,
                                              const UnknownFieldSet& fields,
                                              const std::string& prefix,
                                              int depth) {
  absl::flat_hash_map<int, int> occurrences;  // Per field number: [i].
  for (int i = 0; i < fields.field_count(); ++i) {
    const UnknownField& field = fields.field(i);
    if (field.type() != UnknownField::TYPE_LENGTH_DELIMITED) continue;
    const int index = occurrences[field.number()]++;
    const FieldDescriptor* known = descriptor.FindFieldByNumber(field.number());
    if (known == nullptr) continue;
    std::string path =
        absl::StrCat(prefix, prefix.empty() ? "" : ".", known->name());
    if (known->is_repeated()) absl::StrAppend(&path, "[", index, "]");
    const std::string& value = field.length_delimited();
    if (known->type() == FieldDescriptor::TYPE_STRING) {
      if (std::optional<size_t> bad = FirstInvalidUtf8(value)) {
        return absl::StrCat(path, IdOf(descriptor, fields),
                            ": invalid UTF-8 at byte ", *bad);
      }
    } else if (known->type() == FieldDescriptor::TYPE_MESSAGE &&
               depth < kMaxDepth) {
      UnknownFieldSet nested;
      if (!nested.ParseFromString(value)) continue;
      if (auto found = FirstInvalidString(*known->message_type(), nested, path,
                                          depth + 1)) {
        return found;
      }
    }
  }
  return std::nullopt;
}

}  // namespace

absl::Status WhyUnparsable(const Descriptor& descriptor,
                           absl::string_view bytes) {
  UnknownFieldSet fields;
  if (fields.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    if (auto found = FirstInvalidString(descriptor, fields, "", 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat(*found, " (protobuf string fields must be UTF-8)"));
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("request: ", bytes.size(),
                                                 " bytes that are not a valid ",
                                                 descriptor.full_name()));
}

}  // namespace arbiter
