#include "gateway/http/basic_auth.h"

#include <openssl/crypto.h>

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gateway/auth/api_key.h"

namespace arbiter::http {
namespace {

namespace bhttp = boost::beast::http;

// Digests are of one length, so no comparison leaks one.
bool SameDigest(const auth::KeyDigest& a, const auth::KeyDigest& b) {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

bool Presents(const Request& request, const auth::KeyDigest& username_digest,
              const auth::KeyDigest& password_digest) {
  auto header = request.find(bhttp::field::authorization);
  if (header == request.end()) return false;
  absl::string_view value(header->value().data(), header->value().size());
  value = absl::StripAsciiWhitespace(value);
  constexpr absl::string_view kScheme = "basic ";
  if (value.size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(value.substr(0, kScheme.size()), kScheme)) {
    return false;
  }
  std::string decoded;
  if (!absl::Base64Unescape(
          absl::StripAsciiWhitespace(value.substr(kScheme.size())), &decoded)) {
    return false;
  }
  const size_t colon = decoded.find(':');
  if (colon == std::string::npos) return false;
  // Both compared, whichever differs.
  const bool user =
      SameDigest(auth::Sha256(decoded.substr(0, colon)), username_digest);
  const bool password =
      SameDigest(auth::Sha256(decoded.substr(colon + 1)), password_digest);
  return user & password;
}

}  // namespace

Handler RequireBasicAuth(BasicAuthCredentials credentials, std::string realm,
                         Handler inner) {
  // Validated config holds 64 hex digits; anything else matches nothing.
  auth::KeyDigest password_digest{};
  const bool valid =
      auth::ParseSha256Hex(credentials.password_sha256, &password_digest);
  return [valid, username_digest = auth::Sha256(credentials.username),
          password_digest,
          challenge =
              absl::StrCat("Basic realm=\"", realm, "\", charset=\"UTF-8\""),
          inner = std::move(inner)](Request request, Responder responder) {
    if (valid && Presents(request, username_digest, password_digest)) {
      return inner(std::move(request), std::move(responder));
    }
    Response response(bhttp::status::unauthorized, request.version());
    response.set(bhttp::field::www_authenticate, challenge);
    response.set(bhttp::field::content_type, "text/plain; charset=utf-8");
    response.body() = "unauthorized: these credentials are not accepted\n";
    std::move(responder).Send(std::move(response));
  };
}

}  // namespace arbiter::http
