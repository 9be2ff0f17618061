#include "gateway/http/basic_auth.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace arbiter::http {
namespace {

namespace bhttp = boost::beast::http;

std::string Sha256(absl::string_view bytes) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(),
         digest);
  return std::string(reinterpret_cast<const char*>(digest), sizeof(digest));
}

// Same length first (the lengths are not secret), then every byte.
bool SameBytes(absl::string_view a, absl::string_view b) {
  return a.size() == b.size() &&
         CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

bool Presents(const Request& request, const std::string& username_digest,
              const std::string& password_digest) {
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
  // Digests of equal length, so that neither comparison leaks a length.
  const bool user =
      SameBytes(Sha256(decoded.substr(0, colon)), username_digest);
  const bool password =
      SameBytes(Sha256(decoded.substr(colon + 1)), password_digest);
  return user & password;
}

}  // namespace

Handler RequireBasicAuth(BasicAuthCredentials credentials, std::string realm,
                         Handler inner) {
  // Validated config holds 64 hex digits; anything else matches nothing.
  const std::string& hex = credentials.password_sha256;
  std::string password_digest;
  if (hex.size() == 2 * SHA256_DIGEST_LENGTH &&
      std::all_of(hex.begin(), hex.end(),
                  [](char c) { return absl::ascii_isxdigit(c); })) {
    password_digest = absl::HexStringToBytes(hex);
  }
  return [username_digest = Sha256(credentials.username),
          password_digest = std::move(password_digest),
          challenge =
              absl::StrCat("Basic realm=\"", realm, "\", charset=\"UTF-8\""),
          inner = std::move(inner)](Request request, Responder responder) {
    if (password_digest.size() == SHA256_DIGEST_LENGTH &&
        Presents(request, username_digest, password_digest)) {
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
