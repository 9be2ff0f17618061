#include "gateway/request_id.h"

#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/quote.h"
#include "policy/hash.h"

namespace arbiter {
namespace {

constexpr absl::string_view kPrefix = "arb1_";
constexpr uint64_t kCheckSeed = 0x6172626974657231ull;  // "arbiter1"

std::string Payload(const RequestIdParts& parts) {
  std::string payload =
      absl::StrCat(parts.route, "|", parts.task, "|", parts.unix_millis, "|",
                   absl::Hex(parts.nonce));
  if (!parts.experiment.empty()) {
    absl::StrAppend(&payload, "|", parts.experiment, "|", parts.arm);
  }
  return payload;
}

}  // namespace

std::string EncodeRequestId(const RequestIdParts& parts) {
  std::string payload = Payload(parts);
  uint32_t check =
      static_cast<uint32_t>(policy::StableHash64(payload, kCheckSeed));
  return absl::StrCat(kPrefix, absl::WebSafeBase64Escape(absl::StrCat(
                                   payload, "|", absl::Hex(check))));
}

absl::StatusOr<RequestIdParts> DecodeRequestId(absl::string_view id) {
  auto not_ours = [&] {
    return absl::NotFoundError(
        absl::StrCat("request_id: ", QuoteInput(id),
                     " is not a request id issued by arbiter"));
  };
  if (!absl::ConsumePrefix(&id, kPrefix)) return not_ours();
  std::string decoded;
  if (!absl::WebSafeBase64Unescape(id, &decoded)) return not_ours();
  std::vector<absl::string_view> fields = absl::StrSplit(decoded, '|');
  if (fields.size() != 5 && fields.size() != 7) return not_ours();
  RequestIdParts parts;
  parts.route = std::string(fields[0]);
  parts.task = std::string(fields[1]);
  if (fields.size() == 7) {
    parts.experiment = std::string(fields[4]);
    parts.arm = std::string(fields[5]);
  }
  uint32_t check = 0;
  if (!absl::SimpleAtoi(fields[2], &parts.unix_millis) ||
      !absl::SimpleHexAtoi(fields[3], &parts.nonce) ||
      !absl::SimpleHexAtoi(fields.back(), &check)) {
    return not_ours();
  }
  if (check !=
      static_cast<uint32_t>(policy::StableHash64(Payload(parts), kCheckSeed))) {
    return not_ours();
  }
  return parts;
}

}  // namespace arbiter
