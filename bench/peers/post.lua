-- Posts one OpenAI-shaped chat request; the x-portkey headers make Portkey
-- forward it to the upstream (bench/peers.sh fills in UPSTREAM_PORT).
wrk.method = "POST"
wrk.body   = '{"model":"mock","messages":[{"role":"user","content":"Say hello"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-test"
wrk.headers["x-portkey-provider"] = "openai"
wrk.headers["x-portkey-custom-host"] = "http://127.0.0.1:UPSTREAM_PORT/v1"
