#pragma once

// Request ids that only this deployment can issue. An id carries where its
// request went and when, signed with HMAC-SHA-256 under the deployment's
// key, so any replica holding the key can credit feedback for a request it
// did not serve, and nobody without the key can make one up:
//
//   auto signer = RequestIdSigner::Create({new_key, old_key},
//   absl::Hours(168)); auto id = (*signer)->Issue({"fine-tuned", "faq", millis,
//   nonce, "", ""}); auto verified = (*signer)->Verify(*id, absl::Now());
//   // NOT_FOUND: not signed by any of the keys (altered, forged, another
//   // deployment's). FAILED_PRECONDITION: older than the feedback window,
//   // or issued in the future beyond kMaxClockSkew.
//
// The first key signs, every key verifies: to rotate, put a new key first
// and drop the old one once the ids it signed are past the feedback window.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

struct evp_mac_ctx_st;  // OpenSSL's EVP_MAC_CTX.

namespace arbiter {

// What a request id carries, so any replica can attribute feedback to the
// right route and task without having served the request.
struct RequestIdParts {
  std::string route;
  std::string task;
  int64_t unix_millis = 0;  // When the request was served.
  uint64_t nonce = 0;
  // The experiment and arm the request was assigned to; empty if none.
  std::string experiment;
  std::string arm;
  // The tenant whose key made the request, who alone may judge it; empty
  // for an admin's request or with auth off.
  std::string tenant;
};

// Bytes of the id's MAC: HMAC-SHA-256 truncated to 128 bits.
inline constexpr size_t kRequestIdMacBytes = 16;

// A request id that verified: signed by one of the keys, within the window.
struct VerifiedRequestId {
  RequestIdParts parts;
  // The id's kRequestIdMacBytes MAC bytes: unique per id and unforgeable,
  // a key for remembering which ids were judged.
  std::string mac;
  absl::Time issued;
};

// Why Verify refused an id; a metric label each.
enum class RequestIdRejection { kNotIssuedHere, kExpired, kFromTheFuture };

// The rejection a status returned by RequestIdSigner::Verify stands for
// (kNotIssuedHere for any other status).
[[nodiscard]] RequestIdRejection RejectionOf(const absl::Status& status);
// "not_issued_here", "expired", "from_the_future".
[[nodiscard]] absl::string_view RejectionName(RequestIdRejection rejection);

// Issues and verifies request ids: "arb2_" + base64url(payload | MAC), the
// payload holding every string field length-prefixed (so no field can run
// into the next), then the issue time and the nonce. An id with a tenant is
// "arb3_", its payload the tenant after the arm and its MAC over the prefix
// too (so neither version verifies as the other); ids without one stay
// arb2_, as gateways before tenants issue and read them. Thread-safe;
// constant after construction.
class RequestIdSigner final {
 public:
  static constexpr size_t kMinKeyBytes = 32;
  // Ids issued up to this far ahead of this gateway's clock are accepted:
  // replicas' clocks differ a little.
  static constexpr absl::Duration kMaxClockSkew = absl::Minutes(5);

  // INVALID_ARGUMENT without a key, for a key under kMinKeyBytes (naming its
  // position, never its bytes) or a window that is not positive.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<RequestIdSigner>> Create(
      std::vector<std::string> keys, absl::Duration feedback_window);
  ~RequestIdSigner();  // Wipes the keys from memory.

  RequestIdSigner(const RequestIdSigner&) = delete;
  RequestIdSigner& operator=(const RequestIdSigner&) = delete;

  // A new id for `parts`, signed with the first key. INTERNAL only if
  // OpenSSL cannot compute an HMAC.
  [[nodiscard]] absl::StatusOr<std::string> Issue(
      const RequestIdParts& parts) const;

  // The id's parts if one of the keys signed it, it was issued at most the
  // feedback window before `now` and at most kMaxClockSkew after.
  // NOT_FOUND "request_id: "..." was not issued by this deployment" for
  // anything else a key did not sign; FAILED_PRECONDITION saying how old
  // (or how far in the future) a signed id is.
  [[nodiscard]] absl::StatusOr<VerifiedRequestId> Verify(absl::string_view id,
                                                         absl::Time now) const;

  [[nodiscard]] size_t key_count() const { return keys_.size(); }
  [[nodiscard]] absl::Duration feedback_window() const {
    return feedback_window_;
  }

 private:
  RequestIdSigner(std::vector<std::string> keys,
                  absl::Duration feedback_window);

  // Constant after construction (wiped at destruction); keys_[0] signs.
  std::vector<std::string> keys_;
  // Per key, an HMAC-SHA-256 context with the key set, copied for each MAC:
  // setting one up from scratch costs more than the MAC (nullptr where
  // OpenSSL made none; the one-shot HMAC serves then).
  std::vector<evp_mac_ctx_st*> keyed_;
  const absl::Duration feedback_window_;
};

}  // namespace arbiter
