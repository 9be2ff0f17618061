#include "gateway/tls/tls_identity.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "arbiter/v1/config.pb.h"

namespace arbiter {
namespace {

// Certificates and keys are a few KiB; a bigger file is not one.
constexpr std::streamsize kMaxPemBytes = 1 << 20;

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* cert) const { X509_free(cert); }
};
struct KeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using Bio = std::unique_ptr<BIO, BioFree>;
using Cert = std::unique_ptr<X509, X509Free>;
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;

absl::StatusOr<std::string> ReadFile(const std::string& path,
                                     const std::string& field) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": cannot read \"", path, "\""));
  }
  std::string text(static_cast<size_t>(kMaxPemBytes) + 1, '\0');
  in.read(text.data(), kMaxPemBytes + 1);
  if (in.bad()) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": cannot read \"", path, "\""));
  }
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > static_cast<size_t>(kMaxPemBytes)) {
    return absl::InvalidArgumentError(absl::StrCat(
        field, ": \"", path, "\" is larger than 1 MiB: not a PEM file"));
  }
  return text;
}

Bio Reader(const std::string& pem) {
  return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// Every certificate in `pem`, in order.
std::vector<Cert> Certificates(const std::string& pem) {
  std::vector<Cert> certs;
  Bio bio = Reader(pem);
  while (bio != nullptr) {
    Cert cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (cert == nullptr) break;
    certs.push_back(std::move(cert));
  }
  ERR_clear_error();  // The end of the file reads as an error.
  return certs;
}

}  // namespace

bool TlsConfigured(const v1::Tls& tls) {
  return !tls.cert_file().empty() || !tls.key_file().empty() ||
         !tls.client_ca_file().empty();
}

absl::StatusOr<TlsIdentity> ReadTlsIdentity(const v1::Tls& tls,
                                            absl::string_view field) {
  const std::string cert_field = absl::StrCat(field, ".cert_file");
  const std::string key_field = absl::StrCat(field, ".key_file");
  const std::string ca_field = absl::StrCat(field, ".client_ca_file");
  if (tls.cert_file().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        cert_field, ": required with TLS (the certificate to present)"));
  }
  if (tls.key_file().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        key_field, ": required with TLS (the certificate's private key)"));
  }
  TlsIdentity identity;
  auto cert_pem = ReadFile(tls.cert_file(), cert_field);
  if (!cert_pem.ok()) return cert_pem.status();
  identity.cert_chain_pem = *std::move(cert_pem);
  std::vector<Cert> chain = Certificates(identity.cert_chain_pem);
  if (chain.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        cert_field, ": \"", tls.cert_file(), "\" holds no PEM certificate"));
  }
  X509* leaf = chain.front().get();
  if (X509_cmp_current_time(X509_get0_notAfter(leaf)) < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(cert_field, ": the certificate in \"", tls.cert_file(),
                     "\" has expired"));
  }
  if (X509_cmp_current_time(X509_get0_notBefore(leaf)) > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(cert_field, ": the certificate in \"", tls.cert_file(),
                     "\" is not valid yet"));
  }

  auto key_pem = ReadFile(tls.key_file(), key_field);
  if (!key_pem.ok()) return key_pem.status();
  identity.key_pem = *std::move(key_pem);
  Bio key_bio = Reader(identity.key_pem);
  // No passphrase callback: an encrypted key fails here rather than
  // prompting on the terminal.
  Key key(PEM_read_bio_PrivateKey(
      key_bio.get(), nullptr, [](char*, int, int, void*) { return -1; },
      nullptr));
  ERR_clear_error();
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(key_field, ": \"", tls.key_file(),
                     "\" holds no unencrypted PEM private key"));
  }
  if (X509_check_private_key(leaf, key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(
        key_field, ": the key in \"", tls.key_file(),
        "\" does not match the certificate in \"", tls.cert_file(), "\""));
  }

  if (!tls.client_ca_file().empty()) {
    auto ca_pem = ReadFile(tls.client_ca_file(), ca_field);
    if (!ca_pem.ok()) return ca_pem.status();
    identity.client_ca_pem = *std::move(ca_pem);
    if (Certificates(identity.client_ca_pem).empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(ca_field, ": \"", tls.client_ca_file(),
                       "\" holds no PEM certificate"));
    }
  }
  return identity;
}

}  // namespace arbiter
