// Request ids as clients send them back: any string is verified (or
// refused) without crashing; an id this signer issued always verifies.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "absl/time/clock.h"
#include "gateway/request_id.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::unique_ptr<arbiter::RequestIdSigner> signer = [] {
    auto made = arbiter::RequestIdSigner::Create(
        {std::string(32, 'k'), std::string(40, 'o')}, absl::Hours(168));
    if (!made.ok()) std::abort();
    return *std::move(made);
  }();
  const std::string text(reinterpret_cast<const char*>(data), size);
  (void)signer->Verify(text, absl::Now());
  // The input as the fields of an id: issued, it must verify to them.
  const size_t cut = text.size() / 2;
  arbiter::RequestIdParts parts;
  parts.route = text.substr(0, cut);
  parts.task = text.substr(cut);
  parts.unix_millis = absl::ToUnixMillis(absl::Now());
  parts.nonce = size;
  auto issued = signer->Issue(parts);
  if (issued.ok()) {
    auto verified = signer->Verify(*issued, absl::Now());
    if (!verified.ok() || verified->parts.route != parts.route ||
        verified->parts.task != parts.task) {
      std::fprintf(stderr, "an issued id did not verify to its fields\n");
      std::abort();
    }
  }
  return 0;
}
