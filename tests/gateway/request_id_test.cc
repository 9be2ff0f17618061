#include "gateway/request_id.h"

#include <openssl/hmac.h>
#include <sys/stat.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gateway/config.h"
#include "gateway/request_id_keys.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policy/hash.h"

namespace arbiter {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using ::testing::SizeIs;
using ::testing::StartsWith;

const std::string kKeyA(32, 'a');
const std::string kKeyB =
    "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
constexpr absl::Duration kWeek = absl::Hours(24 * 7);
const absl::Time kServed = absl::FromUnixMillis(1764350000123);

RequestIdParts Parts(std::string experiment = "", std::string arm = "") {
  return {"fine-tuned",
          "support.refund",
          1764350000123,
          0xdeadbeefcafef00dull,
          std::move(experiment),
          std::move(arm),
          ""};
}

std::unique_ptr<RequestIdSigner> Signer(std::vector<std::string> keys,
                                        absl::Duration window = kWeek) {
  auto signer = RequestIdSigner::Create(std::move(keys), window);
  EXPECT_TRUE(signer.ok()) << signer.status();
  return signer.ok() ? *std::move(signer) : nullptr;
}

std::string Issue(const RequestIdSigner& signer, const RequestIdParts& parts) {
  auto id = signer.Issue(parts);
  EXPECT_TRUE(id.ok()) << id.status();
  return id.ok() ? *id : "";
}

// The bytes under an id's prefix.
std::string Decoded(const std::string& id) {
  std::string bytes;
  EXPECT_TRUE(absl::WebSafeBase64Unescape(id.substr(5), &bytes)) << id;
  return bytes;
}

std::string Encoded(const std::string& bytes) {
  return absl::StrCat("arb2_", absl::WebSafeBase64Escape(bytes));
}

// What an id with this payload would be, signed with `key`.
std::string SignedId(const std::string& key, const std::string& payload) {
  unsigned char digest[32];
  unsigned int size = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(payload.data()), payload.size(),
       digest, &size);
  return Encoded(payload + std::string(reinterpret_cast<char*>(digest), 16));
}

void ExpectNotIssuedHere(const RequestIdSigner& signer, const std::string& id,
                         const std::string& what) {
  auto verified = signer.Verify(id, kServed);
  EXPECT_EQ(verified.status().code(), absl::StatusCode::kNotFound)
      << what << ": " << id;
  EXPECT_THAT(std::string(verified.status().message()),
              HasSubstr("was not issued by this deployment"))
      << what;
  EXPECT_EQ(RejectionOf(verified.status()), RequestIdRejection::kNotIssuedHere);
}

TEST(RequestIdTest, RoundTripsItsParts) {
  auto signer = Signer({kKeyA});
  const std::string id = Issue(*signer, Parts());
  EXPECT_THAT(id, StartsWith("arb2_"));
  auto verified = signer->Verify(id, kServed + absl::Minutes(1));
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->parts.route, "fine-tuned");
  EXPECT_EQ(verified->parts.task, "support.refund");
  EXPECT_EQ(verified->parts.unix_millis, 1764350000123);
  EXPECT_EQ(verified->parts.nonce, 0xdeadbeefcafef00d);
  EXPECT_EQ(verified->parts.experiment, "");
  EXPECT_EQ(verified->parts.arm, "");
  EXPECT_EQ(verified->issued, kServed);
  EXPECT_THAT(verified->mac, SizeIs(kRequestIdMacBytes));
  EXPECT_EQ(verified->mac, Decoded(id).substr(Decoded(id).size() - 16));
}

TEST(RequestIdTest, CarriesTheExperimentArm) {
  auto signer = Signer({kKeyA});
  auto verified =
      signer->Verify(Issue(*signer, Parts("prompt-vs-rag", "B")), kServed);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->parts.experiment, "prompt-vs-rag");
  EXPECT_EQ(verified->parts.arm, "B");
  EXPECT_EQ(verified->parts.route, "fine-tuned");
}

TEST(RequestIdTest, DistinctNoncesGiveDistinctIdsAndMacs) {
  auto signer = Signer({kKeyA});
  RequestIdParts other = Parts();
  other.nonce += 1;
  const std::string first = Issue(*signer, Parts());
  const std::string second = Issue(*signer, other);
  EXPECT_NE(first, second);
  EXPECT_NE(signer->Verify(first, kServed)->mac,
            signer->Verify(second, kServed)->mac);
}

// Names with the old separator, or whose boundaries move, are each read
// back as they were: no payload can be taken for another's.
TEST(RequestIdTest, FieldsCannotRunIntoOneAnother) {
  auto signer = Signer({kKeyA});
  const std::vector<RequestIdParts> all = {
      {"a|b", "c", 1, 2, "", "", ""},
      {"a", "b|c", 1, 2, "", "", ""},
      {"ab", "c", 1, 2, "", "", ""},
      {"a", "bc", 1, 2, "", "", ""},
      {"a", "b", 1, 2, "c", "", ""},
      {"a", "b", 1, 2, "", "c", ""},
      {"a", "", 1, 2, "b", "c", ""},
      {"", "a", 1, 2, "b", "c", ""},
      {"a", "b", 1, 2, "", "", "c"},
      {"a", "b", 1, 2, "", "c", "d"},
      {"a", "b", 1, 2, "", "cd", "e"},
      {std::string(300, 'r'), "t", 1, 2, "", "", ""}};
  std::vector<std::string> ids;
  for (const RequestIdParts& parts : all) {
    ids.push_back(Issue(*signer, parts));
    auto verified = signer->Verify(ids.back(), absl::FromUnixMillis(1));
    ASSERT_TRUE(verified.ok()) << verified.status();
    EXPECT_EQ(verified->parts.route, parts.route);
    EXPECT_EQ(verified->parts.task, parts.task);
    EXPECT_EQ(verified->parts.experiment, parts.experiment);
    EXPECT_EQ(verified->parts.arm, parts.arm);
    EXPECT_EQ(verified->parts.tenant, parts.tenant);
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    for (size_t j = i + 1; j < ids.size(); ++j) EXPECT_NE(ids[i], ids[j]);
  }
}

TEST(RequestIdTest, EveryAlteredCharacterIsNotFound) {
  auto signer = Signer({kKeyA});
  const std::string id = Issue(*signer, Parts("prompt-vs-rag", "B"));
  const std::string alphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=.|";
  int tried = 0;
  for (size_t i = 0; i < id.size(); ++i) {
    for (char replacement : alphabet) {
      if (replacement == id[i]) continue;
      std::string altered = id;
      altered[i] = replacement;
      ExpectNotIssuedHere(*signer, altered, absl::StrCat("character ", i));
      ++tried;
    }
  }
  EXPECT_GT(tried, 60 * static_cast<int>(id.size()));
}

TEST(RequestIdTest, EveryAlteredByteIsNotFound) {
  auto signer = Signer({kKeyA});
  const std::string bytes = Decoded(Issue(*signer, Parts("exp", "arm")));
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string altered = bytes;
      altered[i] = static_cast<char>(altered[i] ^ (1 << bit));
      ExpectNotIssuedHere(*signer, Encoded(altered),
                          absl::StrCat("byte ", i, " bit ", bit));
    }
  }
}

// Each field changed and the id re-encoded, with the MAC of the original
// or none that any key made.
TEST(RequestIdTest, EveryAlteredFieldIsNotFound) {
  auto signer = Signer({kKeyA});
  auto other_key = Signer({kKeyB});
  const RequestIdParts original = Parts("prompt-vs-rag", "B");
  const std::string bytes = Decoded(Issue(*signer, original));
  const std::string mac = bytes.substr(bytes.size() - 16);
  std::vector<RequestIdParts> altered(7, original);
  altered[0].route = "prompted";
  altered[1].task = "billing";
  altered[2].unix_millis += 1;
  altered[3].nonce ^= 1;
  altered[4].experiment = "other";
  altered[5].arm = "A";
  altered[6].experiment = altered[6].arm = "";
  for (size_t i = 0; i < altered.size(); ++i) {
    const std::string forged = Decoded(Issue(*other_key, altered[i]));
    const std::string payload = forged.substr(0, forged.size() - 16);
    ExpectNotIssuedHere(*signer, Encoded(payload + mac),
                        absl::StrCat("field ", i, " with the original MAC"));
    ExpectNotIssuedHere(*signer, Encoded(forged),
                        absl::StrCat("field ", i, " signed with another key"));
    ExpectNotIssuedHere(*signer, Encoded(payload + std::string(16, '\0')),
                        absl::StrCat("field ", i, " with a zero MAC"));
  }
}

TEST(RequestIdTest, IdSignedWithAnotherKeyIsNotFound) {
  auto signer = Signer({kKeyA});
  auto other = Signer({kKeyB});
  ExpectNotIssuedHere(*signer, Issue(*other, Parts()), "key B");
  // A key that differs in its last byte is another key.
  auto near = Signer({kKeyA.substr(0, 31) + "b"});
  ExpectNotIssuedHere(*signer, Issue(*near, Parts()), "near key");
}

// The former ids: "arb1_" + base64url("route|task|millis|nonce|check"),
// check an unkeyed hash anyone could compute.
TEST(RequestIdTest, IdsOfTheOldUnkeyedSchemeAreNotFound) {
  auto signer = Signer({kKeyA});
  const std::string payload = "fine-tuned|support.refund|1764350000123|1f";
  const uint32_t check = static_cast<uint32_t>(
      policy::StableHash64(payload, 0x6172626974657231ull));
  const std::string old =
      absl::WebSafeBase64Escape(absl::StrCat(payload, "|", absl::Hex(check)));
  ExpectNotIssuedHere(*signer, absl::StrCat("arb1_", old), "arb1_");
  ExpectNotIssuedHere(*signer, absl::StrCat("arb2_", old), "arb1_ as arb2_");
}

// The signer keeps a keyed HMAC context per key; its MACs must be the
// one-shot HMAC's, for every key, so ids of older builds still verify.
TEST(RequestIdTest, MacIsTheOneShotHmacOfThePayload) {
  auto signer = Signer({kKeyA, kKeyB});
  for (int i = 0; i < 3; ++i) {
    const std::string id = Issue(*signer, Parts("exp", "arm"));
    const std::string bytes = Decoded(id);
    const std::string payload = bytes.substr(0, bytes.size() - 16);
    EXPECT_EQ(id, SignedId(kKeyA, payload));
    EXPECT_TRUE(signer->Verify(SignedId(kKeyB, payload), kServed).ok());
  }
}

TEST(RequestIdTest, TruncatedOrExtendedMacIsNotFound) {
  auto signer = Signer({kKeyA});
  const std::string bytes = Decoded(Issue(*signer, Parts()));
  ExpectNotIssuedHere(*signer, Encoded(bytes.substr(0, bytes.size() - 1)),
                      "15-byte MAC");
  ExpectNotIssuedHere(*signer, Encoded(bytes.substr(0, bytes.size() - 8)),
                      "8-byte MAC");
  ExpectNotIssuedHere(*signer, Encoded(bytes.substr(0, bytes.size() - 16)),
                      "no MAC");
  ExpectNotIssuedHere(*signer, Encoded(bytes + "x"), "17-byte MAC");
  // The full HMAC-SHA-256, untruncated, is not the id's MAC either.
  const std::string payload = bytes.substr(0, bytes.size() - 16);
  unsigned char digest[32];
  unsigned int size = 0;
  HMAC(EVP_sha256(), kKeyA.data(), 32,
       reinterpret_cast<const unsigned char*>(payload.data()), payload.size(),
       digest, &size);
  ExpectNotIssuedHere(
      *signer,
      Encoded(payload + std::string(reinterpret_cast<char*>(digest), 32)),
      "32-byte MAC");
}

TEST(RequestIdTest, TextThatIsNoIdIsNotFound) {
  auto signer = Signer({kKeyA});
  const std::string id = Issue(*signer, Parts());
  for (const std::string& bad :
       {std::string(""), std::string("hello"), std::string("arb2_"),
        std::string("arb2_!!!"), std::string("ARB2_") + id.substr(5),
        id.substr(0, id.size() - 1), id + "A", id + "=", id + "==",
        std::string(" ") + id, id + " ", std::string(100'000, 'x')}) {
    ExpectNotIssuedHere(*signer, bad, bad.substr(0, 40));
  }
}

// Payloads a key did sign but Issue would never write (too few or too
// many fields, a length past the end): still not ids of this deployment.
TEST(RequestIdTest, SignedPayloadsOfTheWrongShapeAreNotFound) {
  auto signer = Signer({kKeyA});
  const std::string bytes = Decoded(Issue(*signer, Parts()));
  const std::string payload = bytes.substr(0, bytes.size() - 16);
  ExpectNotIssuedHere(*signer, SignedId(kKeyA, payload + "x"), "extra byte");
  ExpectNotIssuedHere(*signer,
                      SignedId(kKeyA, payload.substr(0, payload.size() - 8)),
                      "no nonce");
  ExpectNotIssuedHere(*signer,
                      SignedId(kKeyA,
                               "\x7f"
                               "abc"),
                      "long length");
  ExpectNotIssuedHere(*signer, SignedId(kKeyA, std::string(12, '\xff')),
                      "endless length");
  // The same key signing a well-formed payload is, of course, accepted.
  EXPECT_TRUE(signer->Verify(SignedId(kKeyA, payload), kServed).ok());
}

TEST(RequestIdTest, RotatedKeysVerifyWhatTheySigned) {
  auto old_signer = Signer({kKeyB});
  const std::string old_id = Issue(*old_signer, Parts());
  auto rotated = Signer({kKeyA, kKeyB});
  auto verified = rotated->Verify(old_id, kServed);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->parts.route, "fine-tuned");
  // New ids are signed with the first key: a gateway that has not rotated
  // yet ([B]) does not take them, one holding only A does.
  const std::string new_id = Issue(*rotated, Parts());
  ExpectNotIssuedHere(*old_signer, new_id, "new id, old keys");
  EXPECT_TRUE(Signer({kKeyA})->Verify(new_id, kServed).ok());
  // Once B is dropped, what it signed is not taken.
  ExpectNotIssuedHere(*Signer({kKeyA}), old_id, "old id after B is dropped");
  EXPECT_TRUE(Signer({kKeyB, kKeyA})->Verify(old_id, kServed).ok());
}

TEST(RequestIdTest, IdsOlderThanTheWindowAreFailedPrecondition) {
  auto signer = Signer({kKeyA});
  const std::string id = Issue(*signer, Parts());
  EXPECT_TRUE(signer->Verify(id, kServed + kWeek).ok());
  auto late =
      signer->Verify(id, kServed + absl::Hours(24 * 8 + 2) + absl::Minutes(3));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(late.status().message(),
            "request_id: issued 8d 2h ago; feedback is accepted for 7 days "
            "(server.feedback_window_hours)");
  EXPECT_EQ(RejectionOf(late.status()), RequestIdRejection::kExpired);
  auto just_late = signer->Verify(id, kServed + kWeek + absl::Milliseconds(1));
  EXPECT_EQ(just_late.status().code(), absl::StatusCode::kFailedPrecondition);

  auto short_window = Signer({kKeyA}, absl::Hours(0.0005));
  auto after = short_window->Verify(id, kServed + absl::Seconds(2));
  EXPECT_EQ(after.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(after.status().message(),
            "request_id: issued 2.0s ago; feedback is accepted for 0.0005 "
            "hours (server.feedback_window_hours)");
  EXPECT_TRUE(short_window->Verify(id, kServed + absl::Seconds(1)).ok());
}

TEST(RequestIdTest, IdsFromTheFutureBeyondTheClockSkewAreFailedPrecondition) {
  auto signer = Signer({kKeyA});
  const std::string id = Issue(*signer, Parts());
  EXPECT_TRUE(
      signer->Verify(id, kServed - RequestIdSigner::kMaxClockSkew).ok());
  auto early = signer->Verify(id, kServed - absl::Minutes(12));
  EXPECT_EQ(early.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(early.status().message(),
            "request_id: issued 12m 0s in the future by this gateway's clock; "
            "the clocks of the gateway that issued it and this one differ by "
            "more than the 5 minutes allowed");
  EXPECT_EQ(RejectionOf(early.status()), RequestIdRejection::kFromTheFuture);
}

TEST(RequestIdTest, ForgedIdsAreNotFoundWhateverTheirAge) {
  auto signer = Signer({kKeyA});
  const std::string forged = Issue(*Signer({kKeyB}), Parts());
  for (absl::Time now :
       {kServed + absl::Hours(24 * 30), kServed - absl::Hours(1)}) {
    EXPECT_EQ(signer->Verify(forged, now).status().code(),
              absl::StatusCode::kNotFound);
  }
}

TEST(RequestIdTest, RefusesShortKeysWithoutShowingThem) {
  const std::string short_key(31, 's');
  auto none = RequestIdSigner::Create({}, kWeek);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  auto one_short = RequestIdSigner::Create({kKeyA, short_key}, kWeek);
  EXPECT_EQ(one_short.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(one_short.status().message()),
              HasSubstr("key 2 of 2 has 31 bytes; at least 32"));
  EXPECT_THAT(std::string(one_short.status().message()),
              Not(HasSubstr(short_key)));
  EXPECT_EQ(RequestIdSigner::Create({""}, kWeek).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      RequestIdSigner::Create({kKeyA}, absl::ZeroDuration()).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(RequestIdSigner::Create({kKeyA}, kWeek).ok());
}

class RequestIdKeysTest : public ::testing::Test {
 protected:
  void TearDown() override {
    std::error_code ignored;
    for (const auto& path : cleanup_) std::filesystem::remove(path, ignored);
    unsetenv("ARBITER_TEST_REQUEST_ID_KEYS");
  }

  std::string KeyFile(const std::string& text, mode_t mode = 0600) {
    const std::string path =
        (std::filesystem::temp_directory_path() /
         absl::StrCat("arbiter-keys-", getpid(), "-", cleanup_.size()))
            .string();
    cleanup_.push_back(path);
    std::ofstream(path, std::ios::binary) << text;
    chmod(path.c_str(), mode);
    return path;
  }

  std::vector<std::string> cleanup_;
};

TEST_F(RequestIdKeysTest, ReadsOneKeyALineSkippingCommentsAndBlankLines) {
  const std::string path = KeyFile(
      absl::StrCat("# request-id keys: the first signs\n\n", kKeyA, "  \n   \n",
                   "  # the previous key, until 2026-12-01\n", kKeyB, "\r\n"));
  auto keys = ReadRequestIdKeyFile(path);
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_THAT(keys->keys, ElementsAre(kKeyA, kKeyB));
  EXPECT_THAT(keys->source, HasSubstr(path));
  EXPECT_THAT(keys->warnings, IsEmpty());
}

TEST_F(RequestIdKeysTest, ShortKeyIsRefusedWithItsLine) {
  const std::string path =
      KeyFile(absl::StrCat("# keys\n", kKeyA, "\nshort-secret\n"));
  auto keys = ReadRequestIdKeyFile(path);
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(keys.status().message()),
              HasSubstr(absl::StrCat("\"", path,
                                     "\" line 3: the key has 12 "
                                     "characters; at least 32")));
  EXPECT_THAT(std::string(keys.status().message()),
              Not(HasSubstr("short-secret")));
}

TEST_F(RequestIdKeysTest, MissingOrEmptyFileIsRefusedNamingIt) {
  const std::string missing = "/nonexistent/arbiter/request-id.keys";
  auto keys = ReadRequestIdKeyFile(missing);
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(keys.status().message()), HasSubstr(missing));
  const std::string empty = KeyFile("# no keys yet\n\n");
  keys = ReadRequestIdKeyFile(empty);
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(keys.status().message()), HasSubstr("holds no key"));
  keys = ReadRequestIdKeyFile(std::filesystem::temp_directory_path().string());
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(keys.status().message()),
              HasSubstr("not a regular file"));
}

TEST_F(RequestIdKeysTest, UnreadableFileIsRefusedNamingIt) {
  if (geteuid() == 0) GTEST_SKIP() << "root reads any file";
  const std::string path = KeyFile(kKeyA, 0200);
  auto keys = ReadRequestIdKeyFile(path);
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(keys.status().message()), HasSubstr(path));
}

TEST_F(RequestIdKeysTest, FileOthersCanReadIsAWarning) {
  auto keys = ReadRequestIdKeyFile(KeyFile(kKeyA, 0644));
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_THAT(keys->keys, ElementsAre(kKeyA));
  ASSERT_THAT(keys->warnings, SizeIs(1));
  EXPECT_THAT(keys->warnings[0],
              HasSubstr("can be read by others (mode 0644)"));
  EXPECT_THAT(keys->warnings[0], Not(HasSubstr(kKeyA)));
  keys = ReadRequestIdKeyFile(KeyFile(kKeyA, 0640));
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_THAT(keys->warnings, ElementsAre(HasSubstr("by its group")));
}

TEST_F(RequestIdKeysTest, ResolvesTheFileBeforeTheFallback) {
  v1::Server server;
  server.set_request_id_key_file(KeyFile(absl::StrCat(kKeyB, "\n", kKeyA)));
  int fallbacks = 0;
  auto fallback = [&]() -> absl::StatusOr<std::string> {
    ++fallbacks;
    return kKeyA;
  };
  auto keys = ResolveRequestIdKeys(server, fallback);
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_THAT(keys->keys, ElementsAre(kKeyB, kKeyA));
  EXPECT_EQ(fallbacks, 0);
  server.set_request_id_key_file(KeyFile("too short"));
  keys = ResolveRequestIdKeys(server, fallback);
  EXPECT_THAT(std::string(keys.status().message()),
              StartsWith("server.request_id_key_file: \""));
}

TEST_F(RequestIdKeysTest, ResolvesCommaSeparatedKeysOfTheVariable) {
  v1::Server server;
  server.set_request_id_key_env("ARBITER_TEST_REQUEST_ID_KEYS");
  setenv("ARBITER_TEST_REQUEST_ID_KEYS",
         absl::StrCat(kKeyA, ", ", kKeyB, ",").c_str(), 1);
  auto keys = ResolveRequestIdKeys(
      server, []() -> absl::StatusOr<std::string> { return "unused"; });
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_THAT(keys->keys, ElementsAre(kKeyA, kKeyB));
  EXPECT_THAT(keys->source, HasSubstr("ARBITER_TEST_REQUEST_ID_KEYS"));

  setenv("ARBITER_TEST_REQUEST_ID_KEYS",
         absl::StrCat(kKeyA, ",tiny-secret").c_str(), 1);
  keys = ResolveRequestIdKeys(
      server, []() -> absl::StatusOr<std::string> { return "unused"; });
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      std::string(keys.status().message()),
      HasSubstr("server.request_id_key_env: key 2 of environment "
                "variable ARBITER_TEST_REQUEST_ID_KEYS: the key has 11"));
  EXPECT_THAT(std::string(keys.status().message()),
              Not(HasSubstr("tiny-secret")));
}

TEST_F(RequestIdKeysTest, WithNeitherTheFallbackSuppliesTheKey) {
  int fallbacks = 0;
  auto keys =
      ResolveRequestIdKeys(v1::Server(), [&]() -> absl::StatusOr<std::string> {
        ++fallbacks;
        return kKeyB;
      });
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_THAT(keys->keys, ElementsAre(kKeyB));
  EXPECT_EQ(fallbacks, 1);
  auto failed = ResolveRequestIdKeys(v1::Server(), [] {
    return absl::StatusOr<std::string>(absl::UnavailableError("no store"));
  });
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable);
}

TEST_F(RequestIdKeysTest, RandomKeysAreLongEnoughAndDiffer) {
  auto first = RandomRequestIdKey();
  auto second = RandomRequestIdKey();
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_THAT(*first, SizeIs(RequestIdSigner::kMinKeyBytes));
  EXPECT_NE(*first, *second);
  EXPECT_TRUE(RequestIdSigner::Create({*first}, kWeek).ok());
}

TEST_F(RequestIdKeysTest, CheckConfigReadsTheKeyFileWithoutShowingKeys) {
  auto loaded = LoadEmbeddedConfig();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  v1::Config config = loaded->config;
  config.mutable_server()->set_request_id_key_file(
      KeyFile(absl::StrCat(kKeyA, "\nsecret-but-short\n")));
  std::vector<std::string> errors =
      CheckConfigReferences(config, *loaded->files);
  ASSERT_THAT(errors, SizeIs(1));
  EXPECT_THAT(errors[0], StartsWith("server.request_id_key_file: \""));
  EXPECT_THAT(errors[0], HasSubstr("line 2"));
  EXPECT_THAT(errors[0], Not(HasSubstr("secret-but-short")));
  EXPECT_THAT(errors[0], Not(HasSubstr(kKeyA)));
  config.mutable_server()->set_request_id_key_file(KeyFile(kKeyA));
  EXPECT_THAT(CheckConfigReferences(config, *loaded->files), IsEmpty());
  config.mutable_server()->set_request_id_key_file("/nonexistent/keys");
  EXPECT_THAT(CheckConfigReferences(config, *loaded->files),
              ElementsAre(HasSubstr("/nonexistent/keys")));
}

TEST(RequestIdTest, AnIdWithATenantCarriesItUnderArb3) {
  auto signer = Signer({kKeyA});
  RequestIdParts parts = Parts("prompt-vs-rag", "B");
  parts.tenant = "acme";
  const std::string id = Issue(*signer, parts);
  EXPECT_THAT(id, StartsWith("arb3_"));
  auto verified = signer->Verify(id, kServed);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_EQ(verified->parts.tenant, "acme");
  EXPECT_EQ(verified->parts.route, "fine-tuned");
  EXPECT_EQ(verified->parts.arm, "B");
  // Without a tenant an id is what it always was.
  auto untenanted = signer->Verify(Issue(*signer, Parts()), kServed);
  ASSERT_TRUE(untenanted.ok());
  EXPECT_EQ(untenanted->parts.tenant, "");
}

TEST(RequestIdTest, NeitherVersionVerifiesUnderTheOthersPrefix) {
  auto signer = Signer({kKeyA});
  RequestIdParts parts = Parts();
  parts.tenant = "acme";
  const std::string tenant_id = Issue(*signer, parts);
  const std::string plain_id = Issue(*signer, Parts());
  ExpectNotIssuedHere(*signer, "arb2_" + tenant_id.substr(5), "arb3 as arb2");
  ExpectNotIssuedHere(*signer, "arb3_" + plain_id.substr(5), "arb2 as arb3");
  // Nor can the tenant be changed.
  parts.tenant = "beta";
  auto other = Signer({kKeyB});
  const std::string forged = Issue(*other, parts);
  ExpectNotIssuedHere(*signer, forged, "another key's tenant");
}

}  // namespace
}  // namespace arbiter
