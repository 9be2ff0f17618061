// Starts a real `arbiter serve` for the Node tests: the quickstart config
// with the simulated model slowed to `secondsPerToken`, `server` added to
// its server section and `extraConfig` (YAML) appended, every port chosen
// by the OS, state in memory. Resolves
// to the ports its banner names.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync, spawn } = require('node:child_process');

const quickstart = path.resolve(__dirname, '../../quickstart');

// `server` (YAML lines, indented two spaces) is added to the server
// section; `extraConfig` (YAML) is appended.
function writeConfig(secondsPerToken, server = '', extraConfig = '') {
  const text = fs.readFileSync(path.join(quickstart, 'arbiter.yaml'), 'utf8')
    .replace('server:\n', `server:\n${server}`)
    .replace('seconds_per_token: 0.002', `seconds_per_token: ${secondsPerToken}`)
    .replace('dataset: questions.jsonl', `dataset: ${path.join(quickstart, 'questions.jsonl')}`)
    .replace('corpus_dir: corpus', `corpus_dir: ${path.join(quickstart, 'corpus')}`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'arbiter-node-'));
  const file = path.join(dir, 'arbiter.yaml');
  fs.writeFileSync(file, text + extraConfig);
  return file;
}

async function startArbiter({ secondsPerToken = 0.002, server: serverYaml = '', extraConfig = '' } = {}) {
  const binary = process.env.ARBITER_BINARY;
  if (!binary) throw new Error('set ARBITER_BINARY to the arbiter binary');
  const server = spawn(binary, ['serve', '--config', writeConfig(secondsPerToken, serverYaml, extraConfig),
    '--grpc-listen', '127.0.0.1:0', '--metrics-listen', '127.0.0.1:0',
    '--http-listen', '127.0.0.1:0', '--no-state'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const ports = await new Promise((resolve, reject) => {
    let output = '';
    const timer = setTimeout(() => reject(new Error(`no banner; output:\n${output}`)), 60000);
    const onData = (chunk) => {
      output += chunk;
      const grpc = output.match(/grpc listening on [\d.]+:(\d+)/);
      const metrics = output.match(/metrics on https?:\/\/[\d.]+:(\d+)\/metrics/);
      const http = output.match(/http listening on https?:\/\/[\d.]+:(\d+)\/v1/);
      if (grpc && metrics && http) {
        clearTimeout(timer);
        resolve({ grpc: Number(grpc[1]), metrics: Number(metrics[1]), http: Number(http[1]) });
      }
    };
    server.stdout.on('data', onData);
    server.stderr.on('data', onData);
    server.on('exit', (code) => reject(new Error(`exited ${code}:\n${output}`)));
  });
  return { server, ...ports };
}

// The sum of the series of `name` whose labels include every one of `labels`
// (e.g. 'outcome="cancelled"'), or 0.
async function metric(port, name, labels) {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    if (labels.every((label) => line.includes(label))) sum += Number(line.split(' ').pop());
  }
  return sum;
}

async function eventually(probe, { timeoutMs = 5000 } = {}) {
  const until = Date.now() + timeoutMs;
  let value = await probe();
  while (!value && Date.now() < until) {
    await new Promise((resolve) => setTimeout(resolve, 25));
    value = await probe();
  }
  return value;
}

// A new key from `arbiter keys create` with `flags`: { key, entry }, the
// entry being the config's {sha256: ...} for it.
function createKey(flags) {
  const output = execFileSync(process.env.ARBITER_BINARY, ['keys', 'create', ...flags],
    { encoding: 'utf8' });
  const key = output.match(/^(ak_[A-Za-z0-9_-]+)$/m);
  const entry = output.match(/^ {2}- (\{sha256: .*\})$/m);
  if (!key || !entry) throw new Error(`unexpected keys create output:\n${output}`);
  return { key: key[1], entry: entry[1] };
}

module.exports = { startArbiter, metric, eventually, createKey };
