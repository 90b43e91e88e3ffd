#!/usr/bin/env node
// A Node.js client of benefits.v1, built from the .proto files under proto/ alone (no generated
// code, nothing from the Python side): a check that the published contract is usable from
// another language.
//
// Usage:
//   node client.js --target 127.0.0.1:50051 --uscc <USCC> --policy stable-jobs-refund --period 2025
//                  [--ca CA.pem [--cert CLIENT.pem --key CLIENT-KEY.pem] [--server-name NAME]]
// Each option may come from the environment instead: BENEFITS_TARGET, BENEFITS_TOKEN,
// BENEFITS_USCC, BENEFITS_POLICY, BENEFITS_PERIOD, BENEFITS_CA, BENEFITS_CERT, BENEFITS_KEY,
// BENEFITS_SERVER_NAME. Prefer BENEFITS_TOKEN to --token (argv is visible to other users in the
// process list).
//
// --ca turns TLS on (the CA that signed the server's certificate); --cert and --key add this
// client's certificate for a server that requires mutual TLS. Without --ca: plaintext.
//
// Calls PolicyService.ListPolicies (every page) and BenefitService.ExplainEligibility with
// `authorization: Bearer <token>` metadata and prints ONE JSON object on stdout:
//   {"policy_ids": [...],
//    "evaluation": {"uscc", "policy_id", "policy_version", "period", "fact_year",
//                   "outcome": "OUTCOME_ELIGIBLE",          (enum value name)
//                   "amount_fen": "37037015",               (int64 as a decimal STRING: longs: String)
//                   "conditions": [{"id", "result": "CONDITION_RESULT_TRUE"}, ...],
//                   "payable_conditions": [...], "missing_facts": [...], "held_conditions": [...]}}
// On an RPC error it prints {"error": {"rpc", "code", "status", "details"}} on stdout, a line on
// stderr, and exits with status 1; bad usage exits with status 2.
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const REPO_ROOT = path.resolve(__dirname, '..', '..');
const DEADLINE_MS = 20000;

function usage(message) {
  process.stderr.write(`error: ${message}\n` +
    'usage: node client.js --target HOST:PORT --uscc USCC --policy ID --period YEAR ' +
    '[--token TOKEN] [--proto-root DIR] [--ca FILE [--cert FILE --key FILE] [--server-name NAME]]\n' +
    '(or BENEFITS_TARGET, BENEFITS_TOKEN, BENEFITS_USCC, BENEFITS_POLICY, BENEFITS_PERIOD,\n' +
    ' BENEFITS_CA, BENEFITS_CERT, BENEFITS_KEY, BENEFITS_SERVER_NAME)\n');
  process.exit(2);
}

function parseArgs(argv) {
  const options = {
    target: process.env.BENEFITS_TARGET,
    token: process.env.BENEFITS_TOKEN,
    uscc: process.env.BENEFITS_USCC,
    policy: process.env.BENEFITS_POLICY,
    period: process.env.BENEFITS_PERIOD,
    ca: process.env.BENEFITS_CA,
    cert: process.env.BENEFITS_CERT,
    key: process.env.BENEFITS_KEY,
    'server-name': process.env.BENEFITS_SERVER_NAME,
    'proto-root': path.join(REPO_ROOT, 'proto'),
  };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (!arg.startsWith('--')) usage(`unexpected argument ${JSON.stringify(arg)}`);
    let name = arg.slice(2);
    let value;
    const eq = name.indexOf('=');
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    } else {
      i += 1;
      value = argv[i];
    }
    if (!(name in options)) usage(`unknown option --${name}`);
    if (value === undefined) usage(`--${name} needs a value`);
    options[name] = value;
  }
  for (const name of ['target', 'token', 'uscc', 'policy', 'period']) {
    if (!options[name]) usage(`missing --${name}`);
  }
  if (!/^\d{4}$/.test(options.period)) usage(`--period must be a year, got ${options.period}`);
  if (!options.ca && (options.cert || options.key || options['server-name'])) {
    usage('--cert, --key and --server-name need --ca (the CA that signed the server\'s certificate)');
  }
  if (Boolean(options.cert) !== Boolean(options.key)) usage('--cert and --key go together');
  options.period = Number(options.period);
  return options;
}

// Every .proto file under the proto root, as paths relative to it (import paths).
function protoFiles(root) {
  const found = [];
  const walk = (dir) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.name.endsWith('.proto')) found.push(path.relative(root, full).split(path.sep).join('/'));
    }
  };
  walk(root);
  return found.sort();
}

function loadApi(protoRoot) {
  const files = protoFiles(protoRoot);
  if (files.length === 0) throw new Error(`no .proto files under ${protoRoot}`);
  // google/protobuf/timestamp.proto is not under proto/: protobufjs ships the well-known types
  // and resolves them itself.
  const definition = protoLoader.loadSync(files, {
    includeDirs: [protoRoot],
    keepCase: true, // field names as in the .proto (policy_id, amount_fen)
    longs: String, // int64 -> decimal string: no precision lost above 2^53
    enums: String, // enum values by name (OUTCOME_ELIGIBLE)
    defaults: true, // absent scalars as their proto3 defaults (amount_fen "0", lists [])
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).benefits.v1;
}

function unary(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + DEADLINE_MS }, (err, response) => {
      if (err) {
        err.rpc = `benefits.v1.${client.constructor.serviceName}/${method}`;
        reject(err);
      } else {
        resolve(response);
      }
    });
  });
}

function conditionSummary(traces) {
  return traces.map((c) => ({ id: c.id, result: c.result }));
}

function readPem(file, what) {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    return usage(`cannot read ${what} ${file}: ${err.message}`);
  }
}

// TLS when a CA is given (mutual TLS with a certificate and key); plaintext otherwise.
function channelCredentials(options) {
  if (!options.ca) return { credentials: grpc.credentials.createInsecure(), channelOptions: {} };
  const credentials = grpc.credentials.createSsl(
    readPem(options.ca, 'CA certificate'),
    options.key ? readPem(options.key, 'client key') : null,
    options.cert ? readPem(options.cert, 'client certificate') : null,
  );
  const name = options['server-name'];
  const channelOptions = name ? { 'grpc.ssl_target_name_override': name, 'grpc.default_authority': name } : {};
  return { credentials, channelOptions };
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const api = loadApi(options['proto-root']);
  const { credentials, channelOptions } = channelCredentials(options);
  const policyClient = new api.PolicyService(options.target, credentials, channelOptions);
  const benefitClient = new api.BenefitService(options.target, credentials, channelOptions);
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${options.token}`);
  try {
    const policyIds = [];
    let pageToken = '';
    do {
      const page = await unary(policyClient, 'ListPolicies', { page_size: 0, page_token: pageToken }, metadata);
      for (const policy of page.policies) policyIds.push(policy.policy_id);
      pageToken = page.next_page_token;
    } while (pageToken);

    const explained = await unary(benefitClient, 'ExplainEligibility',
      { uscc: options.uscc, policy_id: options.policy, period: options.period }, metadata);
    const e = explained.evaluation;
    const result = {
      policy_ids: policyIds,
      evaluation: {
        uscc: e.uscc,
        policy_id: e.policy_id,
        policy_version: e.policy_version,
        period: e.period,
        fact_year: e.fact_year,
        outcome: e.outcome,
        amount_fen: e.amount_fen,
        conditions: conditionSummary(e.conditions),
        payable_conditions: conditionSummary(e.payable_conditions),
        missing_facts: e.missing_facts,
        held_conditions: e.held_conditions,
      },
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return 0;
  } catch (err) {
    if (typeof err.code !== 'number') throw err;
    const status = grpc.status[err.code] || 'UNKNOWN_CODE';
    process.stdout.write(`${JSON.stringify({
      error: { rpc: err.rpc, code: err.code, status, details: err.details },
    })}\n`);
    process.stderr.write(`rpc error: ${err.rpc}: ${status} (${err.code}): ${err.details}\n`);
    return 1;
  } finally {
    policyClient.close();
    benefitClient.close();
  }
}

main().then(
  (code) => { process.exitCode = code; },
  (err) => {
    process.stderr.write(`error: ${err && err.stack ? err.stack : err}\n`);
    process.exitCode = 2;
  },
);
