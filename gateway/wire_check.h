#pragma once

// Why a serialized request does not parse, for an answer a client can act
// on. Protobuf refuses a proto3 string field holding invalid UTF-8 without
// saying which; this walks the bytes against the message's descriptor to
// find it.
//
//   if (!request.ParseFromString(bytes)) {
//     return WhyUnparsable(*v1::InferRequest::descriptor(), bytes);
//     // INVALID_ARGUMENT "messages[0].content: invalid UTF-8 at byte 5 ..."
//   }

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/descriptor.h"

namespace arbiter {

// INVALID_ARGUMENT naming the first string field (as a path such as
// "documents[2].text") that is not UTF-8 and the byte offset within it, or
// saying that the bytes are not a `descriptor` message at all.
[[nodiscard]] absl::Status WhyUnparsable(
    const google::protobuf::Descriptor& descriptor, absl::string_view bytes);

}  // namespace arbiter
