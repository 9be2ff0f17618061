#include "gateway/http/metrics_handler.h"

#include <utility>

#include "prometheus/text_serializer.h"

namespace arbiter::http {

Handler MetricsHandler(
    std::shared_ptr<const prometheus::Collectable> collectable) {
  return [collectable = std::move(collectable)](Request request,
                                                Responder responder) {
    Response response(boost::beast::http::status::ok, request.version());
    response.set(boost::beast::http::field::content_type, kMetricsContentType);
    response.body() =
        prometheus::TextSerializer().Serialize(collectable->Collect());
    std::move(responder).Send(std::move(response));
  };
}

}  // namespace arbiter::http
