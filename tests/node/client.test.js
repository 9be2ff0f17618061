// Calls a real `arbiter serve` from Node with @grpc/grpc-js, using only the
// .proto files under proto/: Infer, Feedback, GetRouteStats, errors and the
// standard health check.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { spawn } = require('node:child_process');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const binary = process.env.ARBITER_BINARY;
const protoRoot = path.resolve(__dirname, '../../proto');

let server;
let gateway;
let admin;
let health;
let reflection;

function loadPackage(file, includeDirs) {
  return grpc.loadPackageDefinition(
    protoLoader.loadSync(file, {
      keepCase: true,
      longs: Number,
      enums: String,
      defaults: true,
      oneofs: true,
      includeDirs,
    }),
  );
}

// The standard grpc.health.v1 contract, written out so the test needs
// nothing beyond npm and proto/.
const HEALTH_PROTO = `
syntax = "proto3";
package grpc.health.v1;
message HealthCheckRequest { string service = 1; }
message HealthCheckResponse {
  enum ServingStatus { UNKNOWN = 0; SERVING = 1; NOT_SERVING = 2; SERVICE_UNKNOWN = 3; }
  ServingStatus status = 1;
}
service Health { rpc Check(HealthCheckRequest) returns (HealthCheckResponse); }
`;

// The standard grpc.reflection.v1alpha contract, the part this test uses.
const REFLECTION_PROTO = `
syntax = "proto3";
package grpc.reflection.v1alpha;
message ServerReflectionRequest {
  string host = 1;
  oneof message_request { string list_services = 7; }
}
message ServiceResponse { string name = 1; }
message ListServiceResponse { repeated ServiceResponse service = 1; }
message ServerReflectionResponse {
  string valid_host = 1;
  oneof message_response { ListServiceResponse list_services_response = 6; }
}
service ServerReflection {
  rpc ServerReflectionInfo(stream ServerReflectionRequest) returns (stream ServerReflectionResponse);
}
`;

function call(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + 30000 }, (error, response) =>
      error ? reject(error) : resolve(response));
  });
}

before(async () => {
  assert.ok(binary, 'set ARBITER_BINARY to the arbiter binary');
  server = spawn(binary, ['serve', '--grpc-listen', '127.0.0.1:0',
    '--metrics-listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0', '--no-state'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const port = await new Promise((resolve, reject) => {
    let output = '';
    const timer = setTimeout(() => reject(new Error(`no port; output:\n${output}`)), 60000);
    const onData = (chunk) => {
      output += chunk;
      const match = output.match(/grpc listening on [\d.]+:(\d+)/);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    };
    server.stdout.on('data', onData);
    server.stderr.on('data', onData);
    server.on('exit', (code) => reject(new Error(`exited ${code}:\n${output}`)));
  });
  const target = `127.0.0.1:${port}`;
  const v1 = loadPackage(path.join(protoRoot, 'arbiter/v1/gateway.proto'), [protoRoot]).arbiter.v1;
  gateway = new v1.Gateway(target, grpc.credentials.createInsecure());
  admin = new v1.Admin(target, grpc.credentials.createInsecure());
  const fs = require('node:fs');
  const os = require('node:os');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'arbiter-health-'));
  fs.writeFileSync(path.join(dir, 'health.proto'), HEALTH_PROTO);
  fs.writeFileSync(path.join(dir, 'reflection.proto'), REFLECTION_PROTO);
  const healthPackage = loadPackage(path.join(dir, 'health.proto'), [dir]);
  health = new healthPackage.grpc.health.v1.Health(target, grpc.credentials.createInsecure());
  const reflectionPackage = loadPackage(path.join(dir, 'reflection.proto'), [dir]);
  reflection = new reflectionPackage.grpc.reflection.v1alpha.ServerReflection(
    target, grpc.credentials.createInsecure());
});

after(() => {
  for (const client of [gateway, admin, health, reflection]) client?.close();
  server?.kill('SIGTERM');
});

test('health check reports SERVING', async () => {
  const response = await call(health, 'Check', { service: '' });
  assert.equal(response.status, 'SERVING');
});

test('server reflection lists the services', async () => {
  const names = await new Promise((resolve, reject) => {
    const stream = reflection.ServerReflectionInfo();
    stream.on('data', (response) => {
      resolve(response.list_services_response.service.map((s) => s.name));
      stream.end();
    });
    stream.on('error', reject);
    stream.write({ list_services: '*' });
  });
  for (const name of ['arbiter.v1.Gateway', 'arbiter.v1.Admin', 'grpc.health.v1.Health']) {
    assert.ok(names.includes(name), `${name} missing from ${names}`);
  }
});

test('infer through a rag route returns an answer with citations', async () => {
  const response = await call(gateway, 'Infer', {
    messages: [{ role: 'ROLE_USER', content: 'How do I reset my password?' }],
    task: 'faq',
    route: 'rag',
  });
  assert.match(response.text, /^\[sim\]/);
  assert.equal(response.route, 'rag');
  assert.equal(response.route_kind, 'rag');
  assert.ok(response.usage.input_tokens > 0);
  assert.ok(response.cost_usd > 0);
  assert.ok(response.citations.length > 0);
  assert.equal(response.citations[0].marker, '[1]');
  assert.equal(response.decision.policy, 'pinned');

  const feedback = await call(gateway, 'Feedback', {
    request_id: response.request_id, correct: true });
  assert.equal(feedback.route, 'rag');

  const stats = await call(admin, 'GetRouteStats', { route: 'rag' });
  const faq = stats.stats.find((row) => row.task === 'faq');
  assert.equal(faq.requests, 1);
  assert.equal(faq.feedback_count, 1);
  assert.equal(faq.accuracy, 1);
});

test('the policy picks a route when none is pinned', async () => {
  const response = await call(gateway, 'Infer', {
    messages: [{ role: 'ROLE_USER', content: 'How do I reset my password?' }],
  });
  assert.ok(['prompted', 'fine-tuned', 'rag'].includes(response.route));
  assert.ok(response.decision.propensity > 0 && response.decision.propensity <= 1);
  assert.ok(response.decision.reason.length > 0);
});

test('bad input gets INVALID_ARGUMENT naming the field', async () => {
  await assert.rejects(call(gateway, 'Infer', { messages: [] }), (error) => {
    assert.equal(error.code, grpc.status.INVALID_ARGUMENT);
    assert.match(error.details, /messages: must not be empty/);
    return true;
  });
  await assert.rejects(call(gateway, 'Feedback', { request_id: 'nope', correct: true }),
    (error) => error.code === grpc.status.NOT_FOUND);
});
