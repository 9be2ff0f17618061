#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
namespace arbiter {

namespace v1 {
class Tls;
}  // namespace v1

// What a front serves TLS with, as PEM text, checked with OpenSSL when read
// so that a bad file fails the start or the reload, naming the file, rather
// than every handshake after it.
struct TlsIdentity {
  std::string cert_chain_pem;  // The certificate, then its intermediates.
  std::string key_pem;
  // CAs that sign client certificates; empty: none are asked for.
  std::string client_ca_pem;

  friend bool operator==(const TlsIdentity&, const TlsIdentity&) = default;
};

// Reads server.tls's files. INVALID_ARGUMENT naming the field (under
// `field`, e.g. "server.tls") and the file: a path missing, a file that
// cannot be read, no PEM certificate, no private key or one that does not
// match the certificate, a certificate outside its validity period, a CA
// file without a certificate.
[[nodiscard]] absl::StatusOr<TlsIdentity> ReadTlsIdentity(
    const v1::Tls& tls, absl::string_view field = "server.tls");

// Whether `tls` names any file: TLS is wanted.
[[nodiscard]] bool TlsConfigured(const v1::Tls& tls);

}  // namespace arbiter
