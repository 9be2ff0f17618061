#include "gateway/request_id.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>

#include <cmath>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/types/optional.h"
#include "common/quote.h"

namespace arbiter {
namespace {

constexpr absl::string_view kPrefix = "arb2_";
// An id that carries a tenant; see RequestIdSigner.
constexpr absl::string_view kTenantPrefix = "arb3_";
// Where Verify's statuses say which rejection they are, for RejectionOf.
constexpr absl::string_view kRejectionPayload =
    "type.arbiter.dev/arbiter.RequestIdRejection";

void AppendLength(std::string* out, uint64_t length) {
  // LEB128: 7 bits a byte, low first; the high bit says more follow.
  while (length >= 0x80) {
    out->push_back(static_cast<char>((length & 0x7f) | 0x80));
    length >>= 7;
  }
  out->push_back(static_cast<char>(length));
}

void AppendField(std::string* out, absl::string_view field) {
  AppendLength(out, field.size());
  out->append(field.data(), field.size());
}

void AppendUint64(std::string* out, uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8) {
    out->push_back(static_cast<char>((value >> shift) & 0xff));
  }
}

// Every string is length-prefixed, so the encoding is one-to-one: no two
// parts give the same bytes, whatever the names contain.
std::string Payload(const RequestIdParts& parts) {
  std::string payload;
  payload.reserve(parts.route.size() + parts.task.size() +
                  parts.experiment.size() + parts.arm.size() + 20);
  AppendField(&payload, parts.route);
  AppendField(&payload, parts.task);
  AppendField(&payload, parts.experiment);
  AppendField(&payload, parts.arm);
  if (!parts.tenant.empty()) AppendField(&payload, parts.tenant);
  AppendUint64(&payload, static_cast<uint64_t>(parts.unix_millis));
  AppendUint64(&payload, parts.nonce);
  return payload;
}

// Reads what Payload wrote, all of it and nothing else.
class PayloadReader {
 public:
  explicit PayloadReader(absl::string_view bytes) : rest_(bytes) {}

  bool Field(std::string* out) {
    uint64_t length = 0;
    for (int shift = 0;; shift += 7) {
      if (rest_.empty() || shift > 56) return false;
      const auto byte = static_cast<uint8_t>(rest_.front());
      rest_.remove_prefix(1);
      length |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) break;
    }
    if (length > rest_.size()) return false;
    out->assign(rest_.data(), length);
    rest_.remove_prefix(length);
    return true;
  }

  bool Uint64(uint64_t* out) {
    if (rest_.size() < 8) return false;
    *out = 0;
    for (int i = 0; i < 8; ++i) {
      *out = (*out << 8) | static_cast<uint8_t>(rest_[i]);
    }
    rest_.remove_prefix(8);
    return true;
  }

  bool AtEnd() const { return rest_.empty(); }

 private:
  absl::string_view rest_;
};

// An HMAC-SHA-256 context with `key` set; nullptr if OpenSSL fails.
EVP_MAC_CTX* KeyedContext(const std::string& key) {
  EVP_MAC* hmac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (hmac == nullptr) return nullptr;
  EVP_MAC_CTX* context = EVP_MAC_CTX_new(hmac);
  EVP_MAC_free(hmac);  // The context holds its own reference.
  if (context == nullptr) return nullptr;
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_end()};
  if (EVP_MAC_init(context, reinterpret_cast<const unsigned char*>(key.data()),
                   key.size(), params) != 1) {
    EVP_MAC_CTX_free(context);
    return nullptr;
  }
  return context;
}

// The digest of `data` from a copy of `keyed`, which stays as it is, so
// threads may share it; false if OpenSSL fails.
bool KeyedDigest(const EVP_MAC_CTX* keyed, absl::string_view data,
                 unsigned char* digest, unsigned int* digest_size) {
  EVP_MAC_CTX* context = EVP_MAC_CTX_dup(keyed);
  if (context == nullptr) return false;
  size_t size = 0;
  const bool ok =
      EVP_MAC_update(context,
                     reinterpret_cast<const unsigned char*>(data.data()),
                     data.size()) == 1 &&
      EVP_MAC_final(context, digest, &size, EVP_MAX_MD_SIZE) == 1;
  EVP_MAC_CTX_free(context);
  *digest_size = static_cast<unsigned int>(size);
  return ok;
}

// HMAC-SHA-256 of `data`, truncated to kRequestIdMacBytes; from `keyed`
// (the key's context) unless it is nullptr.
absl::StatusOr<std::string> Mac(const EVP_MAC_CTX* keyed, absl::string_view key,
                                absl::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_size = 0;
  const bool ok =
      keyed != nullptr
          ? KeyedDigest(keyed, data, digest, &digest_size)
          : HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
                 reinterpret_cast<const unsigned char*>(data.data()),
                 data.size(), digest, &digest_size) != nullptr;
  if (!ok || digest_size < kRequestIdMacBytes) {
    const char* reason = ERR_reason_error_string(ERR_get_error());
    return absl::InternalError(
        absl::StrCat("request_id: HMAC-SHA-256 failed (OpenSSL: ",
                     reason != nullptr ? reason : "no reason given", ")"));
  }
  std::string mac(reinterpret_cast<const char*>(digest), kRequestIdMacBytes);
  OPENSSL_cleanse(digest, sizeof(digest));
  return mac;
}

absl::Status Rejected(absl::StatusCode code, std::string message,
                      RequestIdRejection rejection) {
  absl::Status status(code, message);
  status.SetPayload(kRejectionPayload, absl::Cord(RejectionName(rejection)));
  return status;
}

// "8d 2h", "3h 12m", "4m 5s", "1.8s": how long, to a reader.
std::string FormatAge(absl::Duration age) {
  const int64_t seconds = absl::ToInt64Seconds(age);
  if (seconds >= 86400) {
    return absl::StrFormat("%dd %dh", seconds / 86400, seconds % 86400 / 3600);
  }
  if (seconds >= 3600) {
    return absl::StrFormat("%dh %dm", seconds / 3600, seconds % 3600 / 60);
  }
  if (seconds >= 60) {
    return absl::StrFormat("%dm %ds", seconds / 60, seconds % 60);
  }
  return absl::StrFormat("%.1fs", absl::ToDoubleSeconds(age));
}

// The window as server.feedback_window_hours sets it: "7 days", "36
// hours", "0.0005 hours".
std::string FormatWindow(absl::Duration window) {
  const double hours = absl::ToDoubleHours(window);
  if (hours >= 24 && std::fmod(hours, 24) == 0) {
    const double days = hours / 24;
    return absl::StrFormat("%g %s", days, days == 1 ? "day" : "days");
  }
  return absl::StrFormat("%g %s", hours, hours == 1 ? "hour" : "hours");
}

}  // namespace

RequestIdRejection RejectionOf(const absl::Status& status) {
  const absl::optional<absl::Cord> payload =
      status.GetPayload(kRejectionPayload);
  if (payload.has_value()) {
    if (*payload == RejectionName(RequestIdRejection::kExpired)) {
      return RequestIdRejection::kExpired;
    }
    if (*payload == RejectionName(RequestIdRejection::kFromTheFuture)) {
      return RequestIdRejection::kFromTheFuture;
    }
  }
  return RequestIdRejection::kNotIssuedHere;
}

absl::string_view RejectionName(RequestIdRejection rejection) {
  switch (rejection) {
    case RequestIdRejection::kNotIssuedHere:
      return "not_issued_here";
    case RequestIdRejection::kExpired:
      return "expired";
    case RequestIdRejection::kFromTheFuture:
      return "from_the_future";
  }
  return "not_issued_here";
}

absl::StatusOr<std::unique_ptr<RequestIdSigner>> RequestIdSigner::Create(
    std::vector<std::string> keys, absl::Duration feedback_window) {
  if (keys.empty()) {
    return absl::InvalidArgumentError(
        "request id keys: at least one key is needed");
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    if (keys[i].size() < kMinKeyBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "request id keys: key ", i + 1, " of ", keys.size(), " has ",
          keys[i].size(), " bytes; at least ", kMinKeyBytes, " are needed"));
    }
  }
  if (feedback_window <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "request id keys: the feedback window must be positive");
  }
  return std::unique_ptr<RequestIdSigner>(
      new RequestIdSigner(std::move(keys), feedback_window));
}

RequestIdSigner::RequestIdSigner(std::vector<std::string> keys,
                                 absl::Duration feedback_window)
    : keys_(std::move(keys)), feedback_window_(feedback_window) {
  for (const std::string& key : keys_) keyed_.push_back(KeyedContext(key));
}

RequestIdSigner::~RequestIdSigner() {
  for (EVP_MAC_CTX* context : keyed_) EVP_MAC_CTX_free(context);
  for (std::string& key : keys_) OPENSSL_cleanse(key.data(), key.size());
}

absl::StatusOr<std::string> RequestIdSigner::Issue(
    const RequestIdParts& parts) const {
  std::string payload = Payload(parts);
  const bool tenant = !parts.tenant.empty();
  auto mac = Mac(keyed_.front(), keys_.front(),
                 tenant ? absl::StrCat(kTenantPrefix, payload) : payload);
  if (!mac.ok()) return mac.status();
  payload.append(*mac);
  return absl::StrCat(tenant ? kTenantPrefix : kPrefix,
                      absl::WebSafeBase64Escape(payload));
}

absl::StatusOr<VerifiedRequestId> RequestIdSigner::Verify(
    absl::string_view id, absl::Time now) const {
  auto not_issued_here = [id] {
    return Rejected(absl::StatusCode::kNotFound,
                    absl::StrCat("request_id: ", QuoteInput(id),
                                 " was not issued by this deployment"),
                    RequestIdRejection::kNotIssuedHere);
  };
  absl::string_view encoded = id;
  const bool tenant = absl::ConsumePrefix(&encoded, kTenantPrefix);
  if (!tenant && !absl::ConsumePrefix(&encoded, kPrefix)) {
    return not_issued_here();
  }
  std::string decoded;
  // Only the one spelling Issue writes: base64 has others for the same bytes
  // (padding, the unused bits of the last character).
  if (!absl::WebSafeBase64Unescape(encoded, &decoded) ||
      absl::WebSafeBase64Escape(decoded) != encoded ||
      decoded.size() <= kRequestIdMacBytes) {
    return not_issued_here();
  }
  const absl::string_view payload =
      absl::string_view(decoded).substr(0, decoded.size() - kRequestIdMacBytes);
  const absl::string_view mac =
      absl::string_view(decoded).substr(payload.size());
  bool signed_here = false;
  const std::string tagged =
      tenant ? absl::StrCat(kTenantPrefix, payload) : std::string();
  for (size_t k = 0; k < keys_.size(); ++k) {
    auto expected =
        Mac(keyed_[k], keys_[k], tenant ? absl::string_view(tagged) : payload);
    if (!expected.ok()) return expected.status();
    if (CRYPTO_memcmp(expected->data(), mac.data(), kRequestIdMacBytes) == 0) {
      signed_here = true;
      break;
    }
  }
  if (!signed_here) return not_issued_here();
  // Only what a key signed is parsed.
  VerifiedRequestId verified;
  RequestIdParts& parts = verified.parts;
  PayloadReader reader(payload);
  uint64_t millis = 0;
  if (!reader.Field(&parts.route) || !reader.Field(&parts.task) ||
      !reader.Field(&parts.experiment) || !reader.Field(&parts.arm) ||
      (tenant && (!reader.Field(&parts.tenant) || parts.tenant.empty())) ||
      !reader.Uint64(&millis) || !reader.Uint64(&parts.nonce) ||
      !reader.AtEnd()) {
    return not_issued_here();
  }
  parts.unix_millis = static_cast<int64_t>(millis);
  verified.mac = std::string(mac);
  verified.issued = absl::FromUnixMillis(parts.unix_millis);
  const absl::Duration age = now - verified.issued;
  if (age > feedback_window_) {
    return Rejected(absl::StatusCode::kFailedPrecondition,
                    absl::StrCat("request_id: issued ", FormatAge(age),
                                 " ago; feedback is accepted for ",
                                 FormatWindow(feedback_window_),
                                 " (server.feedback_window_hours)"),
                    RequestIdRejection::kExpired);
  }
  if (-age > kMaxClockSkew) {
    return Rejected(
        absl::StatusCode::kFailedPrecondition,
        absl::StrCat("request_id: issued ", FormatAge(-age),
                     " in the future by this gateway's clock; the clocks of "
                     "the gateway that issued it and this one differ by more "
                     "than the ",
                     absl::ToInt64Minutes(kMaxClockSkew), " minutes allowed"),
        RequestIdRejection::kFromTheFuture);
  }
  return verified;
}

}  // namespace arbiter
